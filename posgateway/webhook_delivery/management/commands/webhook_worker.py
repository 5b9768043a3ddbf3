"""``manage.py webhook_worker``: a dedicated webhook delivery worker, until SIGTERM or Ctrl-C."""

import asyncio
import signal

from django.core.management.base import BaseCommand

from posgateway.webhook_delivery.worker import Worker


class Command(BaseCommand):
    help = (
        "Deliver webhooks until SIGTERM (or Ctrl-C). Any number of workers and server "
        "processes share the work; set WEBHOOK_IN_PROCESS=0 on the servers to leave it to these."
    )

    def handle(self, *args, **options) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        worker = Worker()
        self.stdout.write(f"webhook worker {worker.owner} delivering", ending="\n")
        self.stdout.flush()
        await worker.run(stop)
        self.stdout.write("webhook worker stopped")
