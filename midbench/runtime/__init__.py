"""Where and how a job runs: the device, the processes of a ``torchrun`` run (sharded evaluation, data-parallel
training) and independent jobs side by side on one machine."""
