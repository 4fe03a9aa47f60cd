"""``python -m relayburnd``."""

from relayburnd.cli import main

main()
