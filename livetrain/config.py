"""Every default that more than one part relies on, once: `Config`.

Standard library only: the streamer and `livetrain --help` import it without the SageMaker SDK.
Two shared values live elsewhere, because the code that needs them ships on its own: the look-back of a
batch (`processing.batch_contract.LOOKBACK_SECONDS`, shipped to SageMaker Processing) and the deploy
Lambda's settings (read from the environment the CloudFormation template sets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from livetrain.errors import UserError

# The account moto answers for: the local stack's role and the local records' ARNs name it.
LOCAL_ACCOUNT_ID = "123456789012"
# The simulated markets (streamer/market.py describes them); the CLIs offer them without importing the simulator.
MARKETS = ("random-walk", "planted-signal", "regime-switching")


@dataclass(frozen=True)
class Config:
    """Defaults shared by the parts; each field is overridden by the environment variable LIVETRAIN_<FIELD>.

    The CloudFormation template's parameter defaults are these values (tests/test_infra_template.py).
    """

    region: str = "us-east-1"
    bucket: str = "livetrain-data"
    epic: str = "CS.D.BITCOIN.CFD.IP"
    pipeline_name: str = "livetrain"
    model_package_group: str = "livetrain-models"
    endpoint_name: str = "livetrain"
    role_arn: str = ""  # the SageMaker Pipeline's execution role; "" = not configured
    state_dir: str = ".livetrain"  # local executions, the demo's services and records
    cache_dir: str = "~/.cache/livetrain"  # built pipeline definitions, by content address
    # the pipeline's hyperparameter tuning
    max_jobs: int = 10
    max_parallel_jobs: int = 2
    # the streamer: closed trades per batch, and the paper-trading bot's policy
    batch_size: int = 10_000
    directions: str = "BUY"  # BUY, SELL or BOTH
    stop_distance: float = 100.0  # price points
    limit_distance: float = 100.0  # price points
    max_lifetime_s: float = 900.0
    open_every_s: float = 30.0  # 0 opens on every tick
    # the local stack's live-quality monitor: how often it runs (0: never), and how many market seconds pass per
    # wall-clock second of the traffic the endpoint sees (a simulator's --speed): its windows are wall-clock
    monitor_every_s: float = 0.0
    market_speed: float = 1.0
    # the local stack: pipeline executions running at once (SageMaker limits them per account); the rest wait
    max_concurrent_executions: int = 2

    @classmethod
    def from_env(cls, environ=os.environ) -> Config:
        """Defaults overridden by the LIVETRAIN_* environment variables that are set."""
        overrides = {}
        for field in fields(cls):
            name = f"LIVETRAIN_{field.name.upper()}"
            if name in environ:
                overrides[field.name] = _convert(name, environ[name], type(field.default))
        return cls(**overrides)


def _convert(name: str, text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UserError(f"{name}={text!r} is not {what}; fix or unset it") from None
