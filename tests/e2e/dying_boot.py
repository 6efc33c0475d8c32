"""A PROCESS environment's command: Beamjobs' boot, whose SDK harness exits (code 2) when the
runner hands it its first bundle, after it has connected and before it opens the bundle's data
stream."""

import os
import sys

from apache_beam.runners.worker import sdk_worker

from beamjobs.worker import boot


def _exit(*args, **kwargs):
    os._exit(2)


sdk_worker.SdkWorker.process_bundle = _exit
boot.main(sys.argv[1:])
