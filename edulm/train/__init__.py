"""Training: the loop (``trainer``), one step (``step``), AdamW groups (``optim``), the lr schedule
(``schedule``), checkpoint contents (``state``), torchrun/DDP/FSDP2 (``distributed``), rank-0 reporting
(``reporting``), graceful stops (``signals``) and ``micro_batch_size: auto`` (``autobatch``)."""
