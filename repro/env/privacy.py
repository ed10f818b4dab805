"""What may leave the machine: fingerprints and reports are made to be posted in public.

Two rules, applied to everything the kit publishes:
1. Environment variables are recorded by allow-list only (those that can change numbers or say
   which device and libraries were used), and never one whose name says it holds a secret.
2. Every string is scrubbed last: the home directory becomes `~`, a path component equal to the
   user name becomes `<user>`, credentials in URLs and token-looking values become `<redacted>`.
"""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

# Variables that change numerics, device selection, library loading or threading.
ENV_ALLOW = {
    "CUBLAS_WORKSPACE_CONFIG",
    "CUBLASLT_WORKSPACE_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_MODULE_LOADING",
    "NVIDIA_TF32_OVERRIDE",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "TORCH_CUDNN_V8_API_DISABLED",
    "TORCH_DETERMINISTIC",
    "TORCHINDUCTOR_FORCE_DISABLE_CACHES",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_NVML_BASED_CUDA_CHECK",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DYNAMIC",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "TOKENIZERS_PARALLELISM",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "CUDA_VERSION",
    "NV_CUDNN_VERSION",
    "NV_CUDA_CUDART_VERSION",
    "NVIDIA_REQUIRE_CUDA",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
}
ENV_ALLOW_PREFIXES = ("NCCL_", "REPRO_")
# A name that says "secret" is never recorded, allow-listed prefix or not.
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH|_KEY$|^KEY$|APIKEY|API_KEY|PRIVATE)", re.I)

REDACTED = "<redacted>"

# Values that look like credentials, wherever they appear.
_TOKEN_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub classic tokens
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),  # AWS access key id
    re.compile(r"sk-[A-Za-z0-9_-]{20,}"),  # OpenAI-style
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"glpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
# scheme://user:password@host -> scheme://<redacted>@host
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
# key=value or key: value where the key says secret; a boolean or a number is a setting, not a
# secret (`quirks.pad_id_zero_masks_first_token=false`, `max_tokens=512`)
_INLINE_SECRET = re.compile(r"(?i)\b([A-Z0-9_]*(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY)[A-Z0-9_]*)\s*([=:])\s*"
                            r"(?!(?:true|false|null|none|[-+]?\d[\d.e+-]*)\b)[^\s,;]+")


def _identity() -> tuple[str | None, str | None]:
    home = os.path.expanduser("~")
    home = home.rstrip("/") if home not in ("", "/", "~") else None
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = os.environ.get("USER") or os.environ.get("LOGNAME")
    return home, user or None


class Scrubber:
    """Replace the home directory, the user name and credentials in strings; `secrets`: values
    identified as secrets elsewhere (a command line's, an environment's), redacted wherever they
    appear."""

    def __init__(self, home: str | None = None, user: str | None = None, secrets: list[str] | tuple[str, ...] = ()):
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first: no partial leftovers
        auto_home, auto_user = _identity()
        self.home = home if home is not None else auto_home
        self.user = user if user is not None else auto_user
        self._home_re = re.compile(re.escape(self.home) + r"(?=/|\b|$)") if self.home else None
        self._user_re = (
            re.compile(r"(?<=/)" + re.escape(self.user) + r"(?=/|$)|(?<=\\)" + re.escape(self.user) + r"(?=\\|$)")
            if self.user and len(self.user) > 1
            else None
        )

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        if self._home_re:
            value = self._home_re.sub("~", value)
        if self._user_re:
            value = self._user_re.sub("<user>", value)
        value = _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + REDACTED + "@", value)
        value = _INLINE_SECRET.sub(lambda m: f"{m.group(1)}{m.group(3)}{REDACTED}", value)
        for pattern in _TOKEN_PATTERNS:
            value = pattern.sub(REDACTED, value)
        return value

    def deep(self, obj: Any) -> Any:
        """Scrub every string (keys included) of a JSON-like structure."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.deep(v) for v in obj]
        return obj


def unscrubbed_here(value: str) -> str | None:
    """A scrubbed string as it was on this machine (`~` the home directory, `<user>` the user name):
    what a local replay of a recorded command needs (`repro diverge`); None when a secret was
    redacted from it, which nothing can bring back. The result never leaves the machine."""
    if REDACTED in value:
        return None
    home, user = _identity()
    if home and (value == "~" or value.startswith("~/")):
        value = home + value[1:]
    return value.replace("<user>", user) if user else value


def _is_secret_value(value: str) -> bool:
    """A value worth redacting wherever it appears: not a setting (a number, a boolean), not so
    short that redacting it would blank ordinary text."""
    return len(value) >= 6 and not re.fullmatch(r"(?i)true|false|null|none|[-+]?\d[\d.e+-]*", value)


def secret_name(name: str) -> bool:
    """An option or variable name that says it holds a secret (`--hf_token`, `--api-key`, WANDB_API_KEY)."""
    return bool(_SECRET_NAME.search(name.lstrip("-").replace("-", "_").upper()))


def command_secrets(argv: list[str]) -> list[str]:
    """The values a command line gives to options named like secrets (`--hf_token X`,
    `--api-key=X`), credentials inside URLs (`https://user:pass@host`), and token-looking words."""
    found = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if arg.startswith("-") and eq and secret_name(name):
            found.append(value)
        elif arg.startswith("-") and not eq and secret_name(arg) and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            found.append(argv[i + 1])
        for match in _URL_CREDENTIALS.finditer(arg):
            found.append(match.group(0)[len(match.group("scheme")):-1])
        found += [m.group(0) for pattern in _TOKEN_PATTERNS for m in pattern.finditer(arg)]
    return [v for v in found if _is_secret_value(v)]


def environment_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """The values of the environment's variables named like secrets (WANDB_API_KEY, HF_TOKEN)."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if _SECRET_NAME.search(k) and _is_secret_value(v)]


def allowed_env_name(name: str) -> bool:
    if _SECRET_NAME.search(name):
        return False
    return name in ENV_ALLOW or name.startswith(ENV_ALLOW_PREFIXES)


def allowed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment variables (values still to be scrubbed by the caller)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ) if allowed_env_name(k)}
