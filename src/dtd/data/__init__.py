"""Offline datasets: loading (any format -> EpisodeDataset), training batches, collection."""

from dtd.data.episodes import Episode, EpisodeDataset
from dtd.data.loaders import EMBEDDED_DATASET, load_dataset
from dtd.data.sampler import SequenceSampler

__all__ = ["Episode", "EpisodeDataset", "EMBEDDED_DATASET", "SequenceSampler", "load_dataset"]
