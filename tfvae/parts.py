"""The VAE's parts: a network body followed by a distribution head.

`Encoder` is q(z|.) and `Decoder` p(.|z); each holds any Keras layer or model
as its body (Sequential, functional or subclassed: yours, or one of
`tfvae.networks`) and a head (`tfvae.posteriors`, `tfvae.likelihoods`) that
turns the body's output into a distribution. The head says what the body must
output (`head.input_shape_for(image_shape)`): a posterior head `[batch,
features]`, a likelihood head for images (H, W, C) `[batch, H, W, C,
params_per_value]`. `check_body` refuses a body that does not fit when the
VAE is built, naming both shapes. Both parts serialize body and head, so a
VAE made of them round-trips through `vae.save` and `keras.models.load_model`
(a custom body must itself be Keras-serializable).

Example:

    body = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(64)])
    encoder = Encoder(body, posteriors.NormalDiagHead(8), name="encoder")
"""

import numbers

import keras
import tensorflow as tf

from tfvae import networks, rules


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


def _shown(shape) -> str:
    """Returns a shape as `[batch, 8, 8, 1, 1]`, naming unknown sizes."""
    names = ["batch"] + ["features"] * (len(shape) - 1)
    sizes = (n if s is None else str(s) for n, s in zip(names, shape, strict=True))
    return "[" + ", ".join(sizes) + "]"


class _BodyAndHead(keras.Model):
    """A network body followed by a distribution head; serializes both.

    With `condition` set ("vector" or "channels", `networks.join_condition`),
    `call(inputs, one_hot)` joins a one-hot class `[batch, classes]` to the
    inputs first: a conditional VAE's encoder and decoder.

    Args:
        body: any Keras layer or model; see the module docstring for its output.
        head: a `posteriors.PosteriorHead` or `likelihoods.LikelihoodHead`.
        condition: None, or how a class label joins the inputs.
    """

    # No Keras default serving signature: it would call the part with one
    # argument, which a conditional part refuses, and so fail any export that
    # tracks the model (exports name their own signatures).
    _default_save_signature = None

    def __init__(
        self, body: keras.Layer, head: keras.Layer, condition: str | None = None, **kw
    ):
        super().__init__(**kw)
        self.body = body
        self.head = head
        self.condition = condition

    def _body_output(self, inputs, one_hot):
        if (one_hot is None) != (self.condition is None):
            raise ValueError(
                f"{self.name} {'needs' if self.condition else 'takes no'} class "
                f"labels. Received: one_hot={one_hot}"
            )
        if one_hot is not None:
            inputs = networks.join_condition(self.condition, inputs, one_hot)
        return self.body(inputs)

    def call(self, inputs, one_hot=None):
        return self.head(self._body_output(inputs, one_hot))

    def check_body(self, inputs, one_hot, image_shape):
        """Returns the distribution of `inputs`, refusing a body that does not fit.

        Args:
            inputs: one example batch of what this part takes, e.g. `[1, D]`.
            one_hot: the one-hot classes `[1, classes]`, or None.
            image_shape: the raw images' (H, W, C), for a likelihood head.

        Raises:
            ValueError: the body's output is not the shape the head needs;
                the message names both.
        """
        features = self._body_output(inputs, one_hot)
        expected = self.head.input_shape_for(image_shape)
        received = tuple(features.shape)
        if len(received) != len(expected) or any(
            e is not None and e != r for e, r in zip(expected, received, strict=True)
        ):
            raise ValueError(
                f"The {self.name}'s body must output {_shown(expected)} for its "
                f"{type(self.head).__name__}. Received: a body output of shape "
                f"{list(received)}"
            )
        return self.head(features)

    def get_config(self):
        return {
            "name": self.name,
            "body": keras.saving.serialize_keras_object(self.body),
            "head": keras.saving.serialize_keras_object(self.head),
            "condition": self.condition,
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            body=keras.saving.deserialize_keras_object(config["body"]),
            head=keras.saving.deserialize_keras_object(config["head"]),
            condition=config.get("condition"),
            name=config["name"],
        )


@_serializable
class Encoder(_BodyAndHead):
    """x `[batch, H, W, C]` in [0, 1] (or z below) -> q(z|.), event `[latent_dim]`.

    The body maps the input to features `[batch, features]`; the posterior
    head (`tfvae.posteriors`) projects them to q.

    Args:
        body: any Keras layer or model (Sequential, functional, subclassed)
            mapping the observations x (the likelihood's `encoder_input`:
            float `[batch, H, W, C]`) to `[batch, features]`.
        head: a posterior head, e.g. `NormalDiagHead(latent_dim)`.
        condition: set by `build_vae` for a conditional VAE, and for the
            "vampprior" hierarchy's q(z1|x, z2) (z2 joins x as a class would).

    Example:

    ```python
    encoder = tfvae.Encoder(
        keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(256, "relu")]),
        tfvae.NormalDiagHead(16),
    )
    ```
    """


@_serializable
class Decoder(_BodyAndHead):
    """z `[batch, latent_dim]` -> p(x|z) (event `[H, W, C]`) or p(z below|z).

    The body maps z to `[batch, H, W, C, params_per_value]` for a likelihood
    head (`tfvae.likelihoods`), or to features `[batch, features]` for the
    posterior head of an upper layer. A body with another output is refused
    when the VAE is built, naming the expected and the received shape.

    Args:
        body: any Keras layer or model mapping z `[batch, latent_dim]` to the
            head's input.
        head: a likelihood head, e.g. `BernoulliHead()` (1 parameter per
            value), or a posterior head for an upper layer.
        condition: set by `build_vae` for a conditional VAE.

    Example:

    ```python
    decoder = tfvae.Decoder(
        keras.Sequential([
            keras.layers.Dense(28 * 28),
            keras.layers.Reshape((28, 28, 1, 1)),  # [batch, H, W, C, 1 logit]
        ]),
        tfvae.BernoulliHead(),
    )
    ```
    """


def part_name(part) -> str:
    """Returns a head's or prior's registry name (its flag value), else its class's.

    A part of your own has no `registry_name`, and is named by its class.
    """
    return getattr(part, "registry_name", None) or type(part).__name__


def check_stack(latent_dims, upper_encoders, upper_decoders, prior) -> None:
    """Refuses stochastic layers whose parts do not fit one another.

    Args:
        latent_dims: the size of each stochastic layer, bottom first (the
            encoder's and the upper encoders' heads).
        upper_encoders, upper_decoders: the parts between layers, L - 1 each.
        prior: the prior, over the top layer.

    Raises:
        ValueError: naming the part and the sizes.
    """
    layers = len(latent_dims)
    if len(upper_encoders) != layers - 1 or len(upper_decoders) != layers - 1:
        raise ValueError(
            "A model with L stochastic layers has L - 1 upper encoders and "
            f"decoders. Received: {len(upper_encoders)} upper encoders, "
            f"{len(upper_decoders)} upper decoders"
        )
    for layer, decoder in enumerate(upper_decoders):
        if decoder.head.latent_dim != latent_dims[layer]:
            raise ValueError(
                f"upper_decoders[{layer}] must model layer {layer}'s "
                f"{latent_dims[layer]} dimensions. Received: {decoder.head.latent_dim}"
            )
    if prior.latent_dim != latent_dims[-1]:
        raise ValueError(
            "The prior must be over the top latent layer. Received: prior "
            f"latent_dim={prior.latent_dim}, latent sizes {latent_dims}"
        )


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """Returns `image_shape` as a tuple, refusing anything but (H, W, C) sizes.

    Raises:
        ValueError: naming the shape received.
    """
    shape = tuple(image_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
        for s in shape
    ):
        raise ValueError(
            "image_shape must be three positive sizes (H, W, C). Received: "
            f"image_shape={image_shape!r}"
        )
    return tuple(int(s) for s in shape)


def encoder_input_shape(likelihood, image_shape) -> tuple[int, ...]:
    """Returns the shape of one encoder input: an image's, or a table row's.

    Args:
        likelihood: the VAE's likelihood head (which makes the encoder's input).
        image_shape: the raw images' (H, W, C); None for a table.

    Returns:
        `image_shape`, or a table row's `(features,)`: its standardized
        cells, one-hots and presence mask side by side.

    Example:
        >>> encoder_input_shape(TableHead(schema), None)  # doctest: +SKIP
        (7,)
    """
    if image_shape is not None:
        return tuple(image_shape)
    cells = likelihood.observe(likelihood.example_batch(None), None)
    return tuple(likelihood.encoder_input(cells).shape[1:])


def check_bodies(vae, seed) -> None:
    """Builds each part of `vae` once, in the order its objective calls them.

    So the weights are drawn in that order, and a body whose output its head
    cannot take is refused (`check_body`) before anything else runs.

    Args:
        vae: a `model.VAE` whose parts are not built yet.
        seed: int `[2]`, for observing the likelihood's example batch.

    Raises:
        ValueError: a body's output does not fit its head, naming both shapes.
    """
    one_hot = tf.zeros([1, vae.num_classes]) if vae.conditional else None
    likelihood = vae.likelihood
    x = likelihood.encoder_input(
        likelihood.observe(likelihood.example_batch(vae.image_shape), seed)
    )
    vae.encoder.check_body(x, one_hot, vae.image_shape)
    for layer, encoder in enumerate(vae.upper_encoders):
        if vae.hierarchy == rules.TOP_DOWN:  # q(z1|x, z2)
            encoder.check_body(x, tf.zeros([1, vae.latent_dims[1]]), None)
            continue
        encoder.check_body(tf.zeros([1, vae.latent_dims[layer]]), None, None)
    for layer, decoder in enumerate(vae.upper_decoders):
        decoder.check_body(tf.zeros([1, vae.latent_dims[layer + 1]]), None, None)
    vae.decoder.check_body(tf.zeros([1, vae.latent_dim]), one_hot, vae.image_shape)


def check_data_shape(likelihood, image_shape) -> None:
    """Refuses an `image_shape` that does not fit the likelihood.

    A table's likelihood (`likelihood.tabular`) takes `image_shape=None`, its
    rows' shape being the schema's; an image likelihood takes (H, W, C).

    Raises:
        ValueError: naming the likelihood and the shape received.
    """
    if likelihood.tabular != (image_shape is None):
        raise ValueError(
            "A table VAE (a TableHead likelihood) takes image_shape=None, an "
            f"image VAE its (H, W, C). Received: {type(likelihood).__name__} "
            f"and image_shape={image_shape}"
        )
    if image_shape is not None:
        check_image_shape(image_shape)
