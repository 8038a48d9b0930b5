"""The artifact-folder check's message and its cache file (the probe itself runs on a real
two-node cluster: tests/e2e/test_cluster_nodes.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from rayline.launch import cluster_check
from rayline.launch.cluster_check import RayNode, refusal_message


def test_the_refusal_names_the_nodes_the_folder_and_how_to_set_the_artifact_url():
    blind = [RayNode("a1b2c3d4e5f6a7b8", "10.0.0.7", "gpu-node-3")]
    text = refusal_message(Path("/home/me/.rayline/artifacts"), blind, 3)
    assert "/home/me/.rayline/artifacts" in text and "1 of the 3 nodes" in text
    assert "a1b2c3d4e5f6 (10.0.0.7, gpu-node-3)" in text
    assert "RAYLINE_ARTIFACTS_URL=s3://" in text and "RAYLINE_ARTIFACTS_URL=file://" in text


def test_a_node_named_by_its_address_is_not_named_twice():
    assert str(RayNode("f" * 56, "127.0.0.1", "127.0.0.1")) == "ffffffffffff (127.0.0.1)"


def test_the_cache_is_private_and_an_unreadable_one_counts_as_empty(tmp_path):
    cache = tmp_path / cluster_check.CACHE_FILE
    assert cluster_check._read(cache) == {}
    cache.write_text("{not json")
    assert cluster_check._read(cache) == {}
    cluster_check._write(cache, {"gcs s1 /x": ["n1", "n2"]})
    assert json.loads(cache.read_text()) == {"gcs s1 /x": ["n1", "n2"]}
    assert stat.filemode(cache.stat().st_mode) == "-rw-------"
    assert [p.name for p in tmp_path.iterdir()] == [cluster_check.CACHE_FILE]  # no temp file left


def test_a_marker_is_seen_only_with_its_own_content(tmp_path):
    marker = tmp_path / "m"
    assert not cluster_check._sees(str(marker), "abc")
    marker.write_text("abc")
    assert cluster_check._sees(str(marker), "abc")
    assert not cluster_check._sees(str(marker), "abd")
