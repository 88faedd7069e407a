"""livetrain: continuous training on live market data with SageMaker Pipelines."""

from setuptools import find_packages, setup

STREAMER = [
    "boto3>=1.35",
    "pymongo>=4.8,<5",
    "lightstreamer-client-lib>=2.2,<3",
]
PIPELINES = [
    "boto3>=1.35",
    "sagemaker>=3.27,<4",
    "scikit-learn>=1.4",
    "matplotlib>=3.8",
    "arch==8.0.0",  # pinned: the evaluation step ships its bootstrap's source (pipelines/code.py)
]
# The local stand-ins for AWS and MongoDB; pinned because infra/local closes moto's gaps.
LOCAL = [
    "moto[server]==5.2.5",
    "SecantusDB==0.7.0b3",
    "aiohttp>=3.9,<4",
    "jinja2>=3.1",  # the console's templates
]
DEV = [*sorted(set(STREAMER + PIPELINES + LOCAL)),
       "pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.6", "hypothesis>=6.100", "ruff>=0.6",
       "statsmodels>=0.14",  # bench_gate's Wilson intervals
       "psutil>=5.9",  # process trees: bench_scale's peak RSS, the tuner's no-orphan test
       "playwright>=1.40",  # drives Debian's Chromium in the console's browser test (`make browser`)
       "awscli>=1.30"]  # the AWS CLI against the local stack (test_local_service); pip picks the one for our botocore

setup(
    name="livetrain",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["livetrain*", "pipelines*", "processing*", "streamer*", "lambdas*", "infra*"]),
    package_data={"infra": ["*.yaml", "*.json", "local/console_templates/*.html"]},
    install_requires=["numpy>=1.26", "pandas>=2.1"],
    extras_require={"streamer": STREAMER, "pipelines": PIPELINES, "local": LOCAL, "dev": DEV},
    entry_points={"console_scripts": ["livetrain=livetrain.cli:main"]},
)
