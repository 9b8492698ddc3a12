"""Errors raised by the upscaler.

The type says what the caller does next: a job that hits a
``PermanentError`` fails at once (and the gateway refunds it), a job that
hits a ``RetryableError`` may succeed if it is tried again later.

    UpscalerError
    ├── PermanentError                 retrying the same input gives the same failure
    │   ├── InvalidOptionsError        settings the pipeline cannot run with
    │   ├── OutputFormatError          the output format cannot hold the input's layout or depth
    │   ├── OutputPathError            the output file's folder does not exist
    │   ├── UnknownModelError          no such model in the manifest
    │   └── WeightsError               weight file missing, damaged or for another network
    │       └── ChecksumMismatchError  a download whose sha256 is not the published one
    └── RetryableError                 may pass on another try or another machine
        ├── DownloadError              network failure while fetching weights
        └── OutOfMemoryError           device memory ran out even at the smallest tile

An input file that cannot be used raises ``shared.images.ImageError``
(unsupported, corrupt, too large), which is permanent in the same sense:
``PERMANENT`` lists both.
"""

from __future__ import annotations

from shared.images import ImageError


class UpscalerError(Exception):
    """Base class of every error the upscaler raises on purpose."""


class PermanentError(UpscalerError):
    """Raised when the same input would fail the same way on every try."""


class RetryableError(UpscalerError):
    """Raised when the failure may go away on a later try (network, memory)."""


class InvalidOptionsError(PermanentError):
    """Raised when pipeline settings are impossible (fp16 on CPU, negative tile, bad pixels)."""


class OutputFormatError(PermanentError):
    """Raised when the requested output format cannot keep the image's channels or depth."""


class OutputPathError(PermanentError):
    """Raised before any work when the output file's folder does not exist."""


class UnknownModelError(PermanentError):
    """Raised when a model name is not in the manifest."""


class WeightsError(PermanentError):
    """Raised when a weight file is missing, unreadable or does not fit its network."""


class ChecksumMismatchError(WeightsError):
    """Raised by ``fetch_weights`` when a download's sha256 differs from the manifest's."""


class DownloadError(RetryableError):
    """Raised by ``fetch_weights`` when the download itself fails (offline, HTTP error)."""


class OutOfMemoryError(RetryableError):
    """Raised when device memory runs out even with batch 1 and the smallest tile."""


# What fails a job at once instead of trying it again.
PERMANENT: tuple[type[Exception], ...] = (PermanentError, ImageError)
