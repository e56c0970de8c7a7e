"""`python launch_nosplice.py ARGS` runs pen with os.splice switched off, so
the tests can drive the buffer (recv_into/send) path of plain TCP, the
fallback pen takes where splice is missing or refused.  Test use only."""

import sys

import pen.relay

pen.relay.Pools.__init__.__defaults__ = (False,)   # Pools(splice=False)

from pen.__main__ import main  # noqa: E402  (after the switch)

sys.exit(main())
