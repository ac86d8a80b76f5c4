"""Data parallelism over N processes started by `accelerate launch` or `torchrun`, through Hugging Face accelerate.

A plain `python main.py` / `python infe.py` never creates a process group: `Processes.start` gives a single-process
group unless the launcher set WORLD_SIZE > 1, and every method is then the identity (one process owns everything,
gathers nothing). Under a launcher, accelerate's PartialState joins the process group (gloo on CPU, NCCL on GPU) and:

- evaluation: each process decodes every N-th length-bucketed batch (`shard`); `gather_in_order` brings the
  records back in the split's order on every process;
- training: micro-batch p of each accumulation window is computed by process p mod N (`owns`); the loss of every
  micro-batch is shared (`value_of_owner`) and the projector's gradients are summed (`sum_gradients`), so every
  process takes the same optimizer step as one process would;
- the main process alone logs at INFO (mel.runs.logs), shows progress bars and writes files; `on_main` runs a check
  there and stops every process if it fails, `barrier` waits for it.
"""
import logging
import os

import torch

from mel.errors import Stopped

logger = logging.getLogger(__name__)


def launched():
    """Whether a launcher started this process as one of several (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Processes:
    """The processes of one run: one (state None) or a group joined through accelerate's PartialState.

    Use it as a context manager: leaving it leaves the process group.
    """

    def __init__(self, state=None):
        self.state = state

    @classmethod
    def start(cls, device=None):
        """Join the process group when launched as one of several processes; `device` is the --device flag."""
        if not launched():
            if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in os.environ:
                logger.warning("`accelerate launch --cpu --num_processes N` started one process: accelerate starts N "
                               "CPU processes only through mpirun (--mpirun_hostfile). This run is one process; for N "
                               "use `accelerate launch --multi_gpu --num_processes N` (CPU processes when there is no "
                               "GPU or with --device cpu) or `torchrun --nproc_per_node N`")
            return cls()
        from accelerate import PartialState

        cpu = device == "cpu" or (not device and not torch.cuda.is_available())
        state = PartialState(cpu=cpu)
        if not state.is_main_process:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # "Loading weights" bars: the main process shows them
        return cls(state)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()

    def finish(self):
        """Leave the process group (at the end of a script)."""
        if self.state is not None:
            self.state.destroy_process_group()
            self.state = None

    @property
    def size(self):
        return self.state.num_processes if self.state is not None else 1

    @property
    def rank(self):
        return self.state.process_index if self.state is not None else 0

    @property
    def is_main(self):
        """The process that logs and writes files (rank 0)."""
        return self.state is None or self.state.is_main_process

    def local_device(self, device):
        """Each process of a multi-GPU run on its own GPU: `cuda` becomes cuda:<local rank>."""
        if self.state is not None and device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def barrier(self):
        if self.state is not None:
            self.state.wait_for_everyone()

    def shard(self, items):
        """This process's share of `items`: every N-th one, starting at its rank (all of them in one process)."""
        return items if self.state is None else items[self.rank::self.size]

    def owns(self, micro_batch, accum_iter):
        """Whether this process computes micro-batch `micro_batch` (index in the epoch): position p of each
        accumulation window of `accum_iter` micro-batches goes to process p mod N."""
        return self.state is None or (micro_batch % accum_iter) % self.size == self.rank

    def gather_in_order(self, n, work):
        """Run work() -> iterable of (index, item) on every process; return the n items of all processes in order.

        A failure in any process stops all of them after the gather (no process waits for one that died): the
        failing process raises its own error, the others raise Stopped with its message.
        """
        items = [None] * n
        if self.state is None:
            for i, item in work():
                items[i] = item
            return items
        from accelerate.utils import gather_object

        error, pairs = None, []
        try:
            pairs = list(work())
        except Exception as e:  # noqa: BLE001 -- handed to every process below, then raised
            error = e
        gathered = gather_object([(pairs, None if error is None else f"{type(error).__name__}: {error}")])
        if error is not None:
            raise error
        for process, (_, message) in enumerate(gathered):
            if message is not None:
                raise Stopped(f"process {process}: {message}")
        for process_pairs, _ in gathered:
            for i, item in process_pairs:
                items[i] = item
        return items

    def on_main(self, check):
        """Run check() on the main process only (e.g. claiming a run's files); if it fails every process stops: the
        main process raises the error, the others Stopped. The other processes wait here until the main one is done."""
        if self.state is None:
            return check()
        from accelerate.utils import broadcast_object_list

        error, result = None, None
        if self.is_main:
            try:
                result = check()
            except Exception as e:  # noqa: BLE001 -- handed to every process below, then raised
                error = e
        message = [None if error is None else f"{error}"]
        broadcast_object_list(message, from_process=0)
        if error is not None:
            raise error
        if message[0] is not None:
            raise Stopped(message[0])
        return result

    def value_of_owner(self, value, device):
        """The 1-element tensor `value` that one process computed (the others pass None), on every process."""
        if self.state is None:
            return value
        total = torch.zeros((), dtype=torch.float32, device=device) if value is None else value.detach().float().clone()
        torch.distributed.all_reduce(total)
        return total

    def sum_gradients(self, parameters):
        """Sum the gradients of `parameters` over the processes (a process with no micro-batch in the window adds 0)."""
        if self.state is None:
            return
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)

    def broadcast_parameters(self, parameters):
        """Every process starts from the main process's values (the projector's initialisation)."""
        if self.state is None:
            return
        for p in parameters:
            torch.distributed.broadcast(p.data, src=0)
