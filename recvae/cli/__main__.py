"""`python -m recvae.cli`: the same as the `recvae` command."""

import sys

from recvae.cli import main

sys.exit(main())
