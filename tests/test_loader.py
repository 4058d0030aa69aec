"""The in-memory tensor loader is a standard DataLoader that Lightning handles through its public API:
a sampler of whole batches that Lightning keeps under every strategy, re-created by Lightning where it
asks for another order (overfit_batches), and no draw from the global random stream."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from conftest import make_vae
from vae_lightning.data import MNISTDataModule
from vae_lightning.data.batches import TensorBatches


def test_the_tensor_loader_is_a_dataloader_whose_sampler_yields_whole_batches():
    data = torch.arange(100)
    loader = TensorBatches((data, data * 2), batch_size=32, shuffle=True, seed=0, rank=1, world_size=2)
    assert isinstance(loader, DataLoader) and loader.batch_size is None  # automatic batching off: ...
    batches = list(loader.sampler)
    assert len(loader) == len(batches) == 2 and [len(b) for b in batches] == [32, 18]  # ... the sampler batches
    # A DistributedSampler: Lightning keeps it under DDP rather than injecting one of its own (this process's
    # share is already dealt out).
    assert isinstance(loader.sampler, DistributedSampler)
    for (x, doubled), index in zip(loader, batches):
        assert torch.equal(x, data[index]) and torch.equal(doubled, 2 * x)


def test_iterating_the_loader_leaves_the_global_random_stream_alone():
    loader = TensorBatches((torch.arange(50),), batch_size=8, shuffle=True)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for _ in range(2):  # two epochs: a DataLoader draws a seed for its workers at each
        list(loader)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.filterwarnings("ignore:You requested to overfit")  # Lightning's, as it turns to its own order
def test_overfit_batches_trains_on_the_same_first_batches_every_epoch(fake_mnist, tmp_path):
    """Lightning re-creates the loaders with a SequentialSampler for overfit_batches."""

    class Record(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, batch[1].tolist()))

    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50)
    trainer = L.Trainer(max_epochs=2, overfit_batches=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[record := Record()],
                        default_root_dir=tmp_path)
    trainer.fit(make_vae("model.latent_dim=2", "model.encoder.hidden_dims=[8]"), dm)
    first, second = ([y for epoch, y in record.seen if epoch == e] for e in (0, 1))
    labels = dm.train_set.labels.tolist()
    assert first == second == [labels[:50], labels[50:100]]  # the first two batches, in order, each epoch
