"""Training the bundled ``cells`` StyleGAN2: the procedural dataset, the discriminator, the
training loop, snapshots and exports, and the quality check (see ``docs/cells-model.md``)."""
