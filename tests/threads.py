"""Running one piece of work from several threads at once, for the tests that race them."""

from __future__ import annotations

import threading
from collections.abc import Callable


def errors_from_threads(work: Callable[[int], None], threads: int) -> list[BaseException]:
    """Run work(0) .. work(threads - 1) in threads of their own, all at once; what any of them raised (a
    warning turned into an error by pytest included), once every one has finished."""
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(k)
        except BaseException as error:  # reported after the join
            errors.append(error)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors
