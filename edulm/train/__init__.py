"""Training: the loop (``trainer``), one step (``step``), optimizers by name (``optim``), schedules by
name (``schedule``), the trainer's counters (``train_state``), checkpoint contents as a mapping of
stateful components (``state``), the callback protocol (``callbacks``), evaluation / checkpoints /
final export (``cadence``), rank-0 output and metrics sinks (``reporting``), printed lines (``console``), torchrun/DDP/FSDP2
(``distributed``), graceful stops (``signals``) and the batch geometry (``autobatch``)."""
