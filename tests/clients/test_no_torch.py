"""clients/ must never import torch (docs/architecture.md): a client install stays small and starts fast."""

from __future__ import annotations

import subprocess
import sys


def test_client_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import attnserve.clients.client, attnserve.clients.loadtest, attnserve.clients.cli\n"
        "import attnserve.clients.heatmap, attnserve.clients.media, attnserve.clients.settings\n"
        "heavy = sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
