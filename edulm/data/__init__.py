"""Text in, token windows out: sources, `edulm prepare` shards, and the training/validation loaders.

- :mod:`edulm.data.sources` reads documents from the hub, local files or the built-in sample;
- :mod:`edulm.data.documents` walks them once for everyone: tokenized, split into held-out and training;
- :mod:`edulm.data.prepare` tokenizes a source, or each source of a mixture, into uint16 shards
  (:mod:`edulm.data.shards`);
- :mod:`edulm.data.loader` packs shards into (inputs, targets) windows, drawn by weight for a mixture
  (:mod:`edulm.data.mixture`) and read ahead by a thread; :mod:`edulm.data.streaming` does the same
  straight from the source(s), tokenizing in a background process.
"""
