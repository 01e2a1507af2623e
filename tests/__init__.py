"""tfvae tests, mirroring the package: tests/test_<module>.py."""
