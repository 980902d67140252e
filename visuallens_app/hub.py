"""Whether the Hugging Face Hub can be reached at all, asked once and quickly before a download.

huggingface_hub retries a failed request with back-off (5 retries per file, up to 8 s apart) and
logs every attempt, so an offline ``models download-clip`` used to print a dozen "Retrying in 8s"
lines for about a minute before saying anything useful. One TCP connect to the hub's host (or the
proxy that would carry the request), bounded by a short timeout and with no retry, answers the
question at once; a download starts only when it succeeds. No torch, no huggingface_hub import.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

from visuallens_app.errors import ModelUnavailableError

#: Where huggingface_hub sends requests unless HF_ENDPOINT says otherwise.
DEFAULT_ENDPOINT = "https://huggingface.co"

#: Seconds the probe waits for name resolution and the TCP handshake together.
PROBE_TIMEOUT_S = 3.0


class HubUnreachableError(ModelUnavailableError):
    """The Hub's host cannot be reached from this machine, so nothing can be downloaded.

    ``str(err)`` is the sentence for the terminal (it may name commands and flags);
    :attr:`gui_message` is the one for the window, which names buttons instead.
    """

    def __init__(self, cli_message: str, gui_message: str) -> None:
        super().__init__(cli_message)
        self.gui_message = gui_message


def hub_address() -> tuple[str, int, str]:
    """(host, port, what it is) the probe connects to: the HF_ENDPOINT host, or its proxy.

    Read from the environment on each call, like :func:`models.clip.hf_hub_cache_dir`.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    url = urllib.parse.urlsplit(endpoint if "//" in endpoint else "https://" + endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        purl = urllib.parse.urlsplit(proxy if "//" in proxy else "http://" + proxy)
        if purl.hostname:
            return (
                purl.hostname,
                purl.port or (443 if purl.scheme == "https" else 80),
                f"the proxy {purl.hostname}",
            )
    return host, port, host


def hub_unreachable_reason(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached (a short clause), or None when a connection opened.

    Name resolution is not bounded by socket timeouts, so the probe runs on a daemon thread
    and is abandoned after ``timeout_s``.
    """
    host, port, label = hub_address()
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                outcome.append(None)
        except socket.gaierror:
            outcome.append(f"{label} cannot be found (no network, or no name server)")
        except TimeoutError:
            outcome.append(f"{label} did not answer within {timeout_s:.0f} s")
        except OSError as err:
            outcome.append(f"{label} cannot be reached ({err.strerror or err})")

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    if not outcome:
        return f"{label} did not answer within {timeout_s:.0f} s"
    return outcome[0]


def require_hub(what: str, *, cli_alternative: str = "", gui_alternative: str = "") -> None:
    """Raise :class:`HubUnreachableError` at once unless the Hub can be reached.

    ``what`` names the download ("CLIP ViT-B-32 (laion2b_s34b_b79k) weights"); the
    alternatives end each sentence with what else the user can do where it is shown.
    """
    reason = hub_unreachable_reason()
    if reason is None:
        return
    cli = f"Cannot download {what}: {reason}; connect this machine to the internet and retry"
    gui = f"No network: {reason}, so {what} cannot be downloaded; connect and try again"
    raise HubUnreachableError(
        cli + (f", or {cli_alternative}" if cli_alternative else "") + ".",
        gui + (f", or {gui_alternative}" if gui_alternative else "") + ".",
    )
