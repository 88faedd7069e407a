"""`livetrain stream`: source → store → bot → exporter, until stopped, for one epic or several.

The main thread reads the source, records each tick and the trades it opens and closes (buffered, flushed
several times a second), and logs a status line every few seconds; an exporter thread per epic turns its stored
closed trades into batches in S3. Each epic is a lane of its own (sequencing, bot, store view, checkpoint,
batches); one source, one MongoDB connection and one S3 client serve them all. SIGTERM or Ctrl-C: stop
subscribing, flush, let the exporters finish the write in progress, close; before streaming begins (connecting,
logging in), stop at once. A second signal interrupts at once in any state. A restart resumes from MongoDB.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdas.epics import export_requests_prefix
from livetrain.errors import UserError
from streamer.sources import Source, Stopped, Tick, usable

if TYPE_CHECKING:  # imported where the streamer starts: the CLI's other commands do not load MongoDB's driver
    from streamer.bot import Bot
    from streamer.exporter import Exporter
    from streamer.store import Store
from streamer.trading import BotSettings

log = logging.getLogger("livetrain.stream")
STATUS_EVERY_S = 5.0
SWEEP_EVERY_S = 0.05  # how often every lane is looked at (a tick's own lane: at each tick)
STOP_WAIT_S = 1.0  # on SIGTERM, how long the export in progress may take; the next run finishes an unfinished batch


@dataclass(frozen=True)
class StreamSettings:
    """What `livetrain stream` runs with (streamer/cli.py builds it from the command line)."""

    source: str  # ig, sim or replay
    epics: tuple[str, ...]
    mongo_uri: str
    bucket: str
    region: str
    batch_size: int
    warmup_seconds: float
    bot: BotSettings
    s3_endpoint_url: str | None = None
    max_batches: int | None = None
    speed: float | None = 1.0  # sim/replay: times real time; None: as fast as possible
    replay_file: str | None = None
    market: str = "planted-signal"  # sim
    seed: int = 0  # sim
    ig_secret_id: str | None = None
    ig_api_url: str = ""
    endpoint_name: str | None = None  # live scoring (streamer/scoring.py): off when None
    runtime_endpoint_url: str | None = None  # SageMaker Runtime, e.g. the local endpoint server
    monitor_prefix: str = "livetrain"  # ground truth under s3://<bucket>/<prefix>/groundtruth/, export requests under
    # s3://<bucket>/<prefix>/export-requests/<epic>/ (lambdas/epics.py)


class Sequencer:
    """Makes tick times strictly increasing per epic, as the batch contract requires.

    A live source's tick whose receive time (ms) is not after the previous tick's is stamped one millisecond
    after it. A recorded source's tick at or before the last stored tick was stored already (a replay read
    again after a restart) and is dropped. A live tick the contract would reject (e.g. a zero bid) is dropped
    too; recorded sources (replay, simulator) check their rows in chunks by the same rules, which costs far less
    than a check per tick.
    """

    def __init__(self, live: bool, last_ts: int | None):
        self.live, self.last_ts = live, last_ts
        self.dropped = 0

    def __call__(self, tick: Tick) -> Tick | None:
        if self.last_ts is not None and tick.ts <= self.last_ts:
            if not self.live:
                return None
            tick = tick._replace(ts=self.last_ts + 1)
        if self.live and not usable(tick):
            self.dropped += 1
            return None
        self.last_ts = tick.ts
        return tick


def open_source(settings: StreamSettings, last_ticks: dict[str, Tick | None], stop: threading.Event) -> Source:
    """The source the settings name, ready to yield events (IG: logged in and connecting; Stopped if `stop` is
    set first)."""
    if settings.source == "sim":
        from streamer.sources import SimulatedSource

        return SimulatedSource(settings.epics, settings.market, settings.seed, settings.speed, after=last_ticks)
    if settings.source == "replay":
        from streamer.sources import ReplaySource

        (epic,) = settings.epics  # (the command line allows one)
        return ReplaySource(settings.replay_file, epic, settings.speed)
    from streamer.ig import IgSource, load_credentials

    source = IgSource(list(settings.epics), load_credentials(settings.ig_secret_id, settings.region),
                      settings.ig_api_url, stop)
    source.start()
    return source


def s3_client(endpoint_url: str | None, region: str):
    from botocore.config import Config

    from livetrain import aws

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return aws.client("s3", region, endpoint_url, config=config)


def check_bucket(s3, bucket: str) -> None:
    """A missing or forbidden bucket is a UserError; an unreachable S3 is only logged (the exporter retries)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from livetrain.aws_errors import error_code

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        raise UserError(f"bucket {bucket}: {error_code(exc) or exc} (does it exist, may this role write to it?); "
                        f"check --bucket") from None
    except BotoCoreError as exc:
        log.warning("S3 unreachable at start (%s); batches wait until it answers", exc)


def live_scorer(settings: StreamSettings, s3):
    """The live scorer when --endpoint-name is given: SageMaker Runtime calls with a short timeout, no retries."""
    from botocore.config import Config

    from livetrain import aws
    from streamer.scoring import LiveScorer, ScoringSettings

    scoring = ScoringSettings(settings.endpoint_name, settings.bucket, settings.monitor_prefix)
    quick = Config(connect_timeout=scoring.timeout_s, read_timeout=scoring.timeout_s,
                   retries={"total_max_attempts": 1}, max_pool_connections=scoring.workers)
    runtime = aws.client("sagemaker-runtime", settings.region, settings.runtime_endpoint_url, config=quick)
    sagemaker = aws.client("sagemaker", settings.region, config=quick)
    log.info("live scoring: each trade scored at its opening by endpoint %s", settings.endpoint_name)
    return LiveScorer(scoring, runtime, s3, sagemaker)


def configure_logging() -> None:
    logger = logging.getLogger("livetrain")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class StopSignals:
    """SIGTERM and SIGINT set `requested`, and raise Stopped while `at_once` (nothing to finish yet); a second
    one raises KeyboardInterrupt (sets `forced`): stop now, the next run finishes what this one left."""

    def __init__(self):
        self.requested = threading.Event()
        self.at_once, self.forced = True, False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested.is_set():
            log.info("second %s received: stopping now", name)
            self.forced = True
            raise KeyboardInterrupt
        self.requested.set()
        if self.at_once:
            log.info("%s received: stopping", name)
            raise Stopped(name)
        log.info("%s received: stopping after the write in progress", name)


@dataclass
class Lane:
    """One epic's share of the streamer: its view of the store, bot, exporter and sequencer."""

    store: Store
    bot: Bot
    exporter: Exporter
    sequencer: Sequencer

    def flush(self) -> None:
        """Write the buffered ticks and trades; the exporter looks for a batch to claim."""
        self.store.flush()
        self.exporter.wake()


def run_stream(settings: StreamSettings) -> int:
    """The streamer's main loop; returns the exit code."""
    from streamer.bot import Bot
    from streamer.exporter import Exporter
    from streamer.store import Store, connect

    configure_logging()
    stop = StopSignals()
    try:
        db = connect(settings.mongo_uri)
        stores = {epic: Store(db, epic) for epic in settings.epics}
        if all(max_batches_reached(store, settings.max_batches) for store in stores.values()):
            return 0
        for store in stores.values():
            if discarded := store.discard_uncommitted():
                log.info("%s: deleted %d documents a flush cut short by a crash wrote after the checkpoint; "
                         "resuming from the checkpoint", store.epic, discarded)
        s3 = s3_client(settings.s3_endpoint_url, settings.region)
        check_bucket(s3, settings.bucket)
        last_ticks = {epic: store.last_tick() for epic, store in stores.items()}
        stop.at_once = False  # from here on, the source itself gives up its waits when asked to stop
        source = open_source(settings, last_ticks, stop.requested)
    except Stopped:
        log.info("stopped before streaming began")
        return 0
    scorer = live_scorer(settings, s3) if settings.endpoint_name else None
    lanes = {}
    for epic, store in stores.items():
        exporter = Exporter(store, s3, settings.bucket, settings.batch_size, settings.bot.as_dict(),
                            settings.max_batches,
                            requests_prefix=export_requests_prefix(settings.monitor_prefix, epic))
        last = last_ticks[epic]
        lanes[epic] = Lane(store, Bot(store, settings.bot, settings.warmup_seconds, scorer), exporter,
                           Sequencer(source.live, None if last is None else last.ts))
        exporter.start()
    log.info("streaming %s from %s into MongoDB; %d open trades resumed; batches of %d to s3://%s",
             ", ".join(settings.epics), settings.source, sum(lane.bot.open_trades for lane in lanes.values()),
             settings.batch_size, settings.bucket)
    status = _Status(lanes, source, scorer)
    exhausted, next_sweep = False, 0.0
    try:
        for event in source.events():
            if event is not None:
                epic, tick = event
                lane = lanes[epic]
                if (tick := lane.sequencer(tick)) is not None:
                    lane.bot.on_tick(tick)
                if lane.store.flush_due():
                    lane.flush()
            if time.monotonic() >= next_sweep:  # every lane, a few times a second: time-due flushes, failures
                next_sweep = time.monotonic() + SWEEP_EVERY_S
                for lane in lanes.values():
                    if lane.store.flush_due():
                        lane.flush()
                    if lane.exporter.failure is not None:
                        raise lane.exporter.failure
                status.maybe_log()
                if all(lane.exporter.done for lane in lanes.values()):
                    break
            if stop.requested.is_set():
                break
        else:
            exhausted = True
        source.close()
        for lane in lanes.values():
            lane.flush()
        if exhausted:  # a replay's end
            log.info("source exhausted: exporting the complete batches")
            for lane in lanes.values():
                lane.exporter.finish(give_up=stop.requested)
    finally:
        for lane in lanes.values():
            lane.exporter.stop(timeout=0 if stop.forced else STOP_WAIT_S if stop.requested.is_set() else 30)
        if scorer is not None:
            scorer.close()
        if any(lane.exporter.is_alive() for lane in lanes.values()):
            log.warning("stopping without waiting for the export in progress; the next run finishes the batch")
        status.log()
    for lane in lanes.values():
        if lane.exporter.failure is not None:
            raise lane.exporter.failure
    return 0


def max_batches_reached(store, max_batches: int | None) -> bool:
    """True (and says so) when the database holds `max_batches` committed batches of the epic already."""
    if max_batches is None or (committed := store.committed_batches()) < max_batches:
        return False
    log.info("--max-batches %d reached: %d batches of %s committed in this database already (the count spans "
             "restarts); nothing to do. Raise --max-batches to export more", max_batches, committed, store.epic)
    return True


class _Status:
    """The status line: ticks/s, open and closed trades, batches; per epic when there are several."""

    def __init__(self, lanes: dict[str, Lane], source, scorer):
        self.lanes, self.source, self.scorer = lanes, source, scorer
        self._at, self._ticks = time.monotonic(), 0

    def maybe_log(self) -> None:
        if time.monotonic() - self._at >= STATUS_EVERY_S:
            self.log()

    def log(self) -> None:
        lanes = self.lanes.values()
        now, ticks = time.monotonic(), sum(lane.store.stored_ticks for lane in lanes)
        rate = (ticks - self._ticks) / max(now - self._at, 1e-9)
        self._at, self._ticks = now, ticks
        bad_rows = f", {self.source.bad_rows}" if self.source.bad_rows else ""
        last = [lane.exporter.last_batch for lane in lanes if lane.exporter.last_batch]
        log.info("%s: %s ticks stored (%.0f/s), %s dropped%s; trades %s open, %s closed; batches %d committed "
                 "(last %s)", self.source.status, f"{ticks:,}", rate,
                 f"{sum(lane.sequencer.dropped for lane in lanes):,}", bad_rows,
                 f"{sum(lane.bot.open_trades for lane in lanes):,}", f"{sum(lane.bot.closed for lane in lanes):,}",
                 sum(lane.exporter.committed for lane in lanes), last[-1] if last else "none")
        if len(self.lanes) > 1:
            log.info("per epic: %s", "; ".join(
                f"{epic} {lane.store.stored_ticks:,} ticks, {lane.bot.closed:,} closed, "
                f"{lane.exporter.committed} batches" for epic, lane in self.lanes.items()))
        if self.scorer is not None:
            log.info("live scoring: %s", self.scorer.status())
