"""The local stack's daemons: moto and the MongoDB-wire server start on loopback, answer, and stop."""

import boto3
import pymongo

from infra.local.services import start_mongo, start_moto


def test_moto_daemon_serves_s3_on_loopback(tmp_path):
    moto = start_moto(tmp_path)
    try:
        assert moto.url.startswith("http://127.0.0.1:")
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
        s3.create_bucket(Bucket="local-bucket")
        s3.put_object(Bucket="local-bucket", Key="k", Body=b"v")
        assert s3.get_object(Bucket="local-bucket", Key="k")["Body"].read() == b"v"
    finally:
        moto.stop()
    assert moto.process.poll() is not None


def test_mongo_daemon_keeps_data_across_restarts(tmp_path):
    mongo = start_mongo(tmp_path)
    try:
        assert mongo.url.startswith("mongodb://127.0.0.1:")
        pymongo.MongoClient(mongo.url).db.c.insert_one({"_id": 1, "v": "kept"})
    finally:
        mongo.stop()
    mongo = start_mongo(tmp_path)
    try:
        assert pymongo.MongoClient(mongo.url).db.c.find_one({"_id": 1})["v"] == "kept"
    finally:
        mongo.stop()


def test_a_demo_on_a_store_another_process_holds_names_that_process(tmp_path, run_cli):
    mongo = start_mongo(tmp_path)
    try:
        result = run_cli("demo", "--state-dir", tmp_path)
    finally:
        mongo.stop()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    pid = mongo.process.pid
    assert result.stderr.splitlines()[-1] == (
        f"livetrain: error: the MongoDB store {tmp_path / 'mongo'} is in use by process {pid} (python secantusd-py); "
        f"stop it (kill {pid}) or pass another --state-dir")
    assert not (tmp_path / "logs" / "moto.log").exists()  # refused before any other service started
