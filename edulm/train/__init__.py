"""Training: the loop (``trainer``: check, build, restore, then steps), one step (``step``), optimizers
(``optim/``, one module each) and schedules (``schedule/``, one module each), the trainer's counters (``state``),
what a checkpoint holds (``checkpointing``), the callback protocol (``callbacks``), the built-in callbacks
(``core_callbacks``: evaluation, checkpoints, final export; ``downstream``: benchmark scores; ``reporting``: rank-0
output and metrics sinks; ``run_log``), printed lines (``console``), torchrun/DDP/FSDP2 (``distributed``), graceful
stops (``signals``), the batch geometry (``autobatch``) and ``edulm info`` (``info``)."""
