"""Text in, token windows out: sources, `edulm prepare` shards, and the training/validation loaders.

- :mod:`edulm.data.sources` reads documents from the hub, local files or the built-in sample;
- :mod:`edulm.data.prepare` tokenizes a source into uint16 shards (:mod:`edulm.data.shards`);
- :mod:`edulm.data.loader` packs shards into (inputs, targets) windows; :mod:`edulm.data.streaming`
  does the same straight from a source, tokenizing in a background process.
"""
