"""Peak resident memory of a piece of CPU work (Linux): what the benchmarks report as "peak added MB".

torch's CPU allocations are invisible to tracemalloc, so the kernel's own marks are used: reset the peak-RSS mark
(/proc/self/clear_refs) after returning freed heap to the OS (malloc_trim), run the work, read VmHWM - VmRSS.
"""
import contextlib
import ctypes
import gc


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss():
    """Return freed heap to the OS and reset the kernel's peak-RSS mark; the current RSS in MB."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") / 1024


def peak_rss_since_reset():
    return _status_kb("VmHWM") / 1024
