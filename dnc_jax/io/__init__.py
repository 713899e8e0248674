"""Files: :mod:`~dnc_jax.io.atomic` (atomic writes), :mod:`~dnc_jax.io.jsonio` (JSON and CSV),
:mod:`~dnc_jax.io.runs` (the ``--out`` rules of every command, interrupts at safe points)."""
