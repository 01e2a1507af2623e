"""The two splits every tfvae dataset has: it trains on one and tests on the other.

A TFDS dataset must have both (`tfvae.data`), and a user's `--image_folder`
holds one subfolder of each name (`tfvae.image_folder`).
"""

TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
