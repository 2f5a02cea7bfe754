"""Runtime: attention modes (reference path on any device) and the fast CUDA runner."""
