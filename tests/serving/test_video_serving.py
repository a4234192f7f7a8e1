"""Video through the real Triton: bad video refused with 400 / INVALID_ARGUMENT by the `_pipeline`, the
`_timeline` and the Python client (before sending); the timeline's clips reach the classifier in batches."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from attnserve.errors import DataError, InferenceError
from attnserve.models.synthetic import encode_video, motion_story_video

pytestmark = pytest.mark.triton

MODEL = "timesformer_motion"
INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _story(frames_each: int = 40, seed: int = 0) -> bytes:
    frames, _ = motion_story_video((("right", frames_each), ("left", frames_each)), seed=seed)
    return encode_video(frames)


def _bad_videos() -> dict[str, tuple[bytes, str]]:
    """name -> (payload, a fragment the refusal must contain)."""
    one_frame, _ = motion_story_video((("right", 1),), seed=0)
    three_frames, _ = motion_story_video((("right", 3),), seed=0)
    return {
        "zero_frames": (b"", "empty video payload: expected an encoded video"),
        "one_frame": (encode_video(one_frame), "holds 1 frame: the model needs a video of at least 8 frames"),
        "three_frames": (encode_video(three_frames), "holds 3 frames: the model needs a video of at least 8 frames"),
        "png": (_png(), "is a still image (png_pipe), not a video: expected an encoded video"),
        "text": (b"not a video\n" * 64, "cannot decode video (768 bytes; expected an encoded video"),
        "corrupt": (_story()[:300] + bytes(2000), "cannot decode video"),
    }


def _client(triton_server: Any, protocol: str) -> Any:
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings

    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    return TritonClient(ClientSettings(url=url, protocol=protocol, retries=0))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_video_is_refused_by_the_pipeline_and_the_timeline(triton_server: Any, protocol: str) -> None:
    spec = triton_server.specs[MODEL]
    assert spec.frames == 8
    with _client(triton_server, protocol) as client:
        for case, (payload, fragment) in _bad_videos().items():
            for call in (
                lambda p=payload: client.classify_encoded(spec.pipeline_name, [p]),
                lambda p=payload: client.timeline(MODEL, p),
            ):
                with pytest.raises(InferenceError) as refused:
                    call()
                assert fragment in str(refused.value), (case, str(refused.value))
                assert refused.value.status == INVALID[protocol], (case, refused.value.status)
        # the server keeps serving: a real clip still gets an answer from both
        assert client.classify_encoded(spec.pipeline_name, [_story(8)])[0].label in spec.io.labels
        assert len(client.timeline(MODEL, _story(8)).segments) >= 1


def test_the_python_client_refuses_the_same_videos_before_sending(triton_server: Any, tmp_path: Any) -> None:
    renamed = tmp_path / "still.mp4"
    renamed.write_bytes(_png())
    one_frame = tmp_path / "one.mp4"
    one_frame.write_bytes(_bad_videos()["one_frame"][0])
    cases = {renamed: "is a still image", one_frame: "holds 1 frame: the model needs a video of at least 8 frames"}
    with _client(triton_server, "grpc") as client:
        for path, fragment in cases.items():
            with pytest.raises(DataError, match=fragment):
                client.classify_video(MODEL, path)
        # and the pipeline refuses the renamed PNG the same way (the server never sees the file name)
        with pytest.raises(InferenceError, match="is a still image"):
            client.classify_encoded(triton_server.specs[MODEL].pipeline_name, [renamed])


def test_a_window_shorter_than_a_clip_is_refused_with_the_fix(triton_server: Any) -> None:
    with (
        _client(triton_server, "grpc") as client,
        pytest.raises(InferenceError, match="holds 4 frames at 8 fps; the model needs at least 8: use window_s >= 1"),
    ):
        client.timeline(MODEL, _story(16), window_s=0.5)


def test_timeline_covers_the_video_and_its_clips_are_batched(triton_server: Any) -> None:
    spec = triton_server.specs[MODEL]
    payload = _story(40)  # 80 frames at 8 fps: 10 s
    with _client(triton_server, "grpc") as client:
        before = _executions(client, MODEL)
        timeline = client.timeline(MODEL, payload, window_s=1.0, stride_s=0.5, top_k=2)
        executions = _executions(client, MODEL) - before
        clips = len(timeline.segments)
        assert clips == 19 and timeline.seconds == pytest.approx(10.0) and timeline.fps == pytest.approx(8.0)
        assert [s.start_s for s in timeline.segments[:3]] == [0.0, 0.5, 1.0] and timeline.segments[-1].end_s == 10.0
        assert all(len(s.top_k) == 2 and s.top_k[0].label in spec.io.labels for s in timeline.segments)
        assert timeline.clips_per_request == spec.serving.max_batch_size
        assert executions == -(-clips // spec.serving.max_batch_size) < clips  # Triton ran the clips as batches
        unbatched_before = _executions(client, MODEL)
        one_by_one = client.timeline(MODEL, payload, window_s=1.0, stride_s=0.5, top_k=2, clips_per_request=1)
        assert _executions(client, MODEL) - unbatched_before == clips
        # same clips, same model: the same labels whichever way they were sent
        assert [s.label for s in one_by_one.segments] == [s.label for s in timeline.segments]
        whole = client.timeline(MODEL, payload, window_s=0)
        assert [(s.start_s, s.end_s) for s in whole.segments] == [(0.0, 10.0)]


def _executions(client: Any, model: str) -> int:
    stats = client.statistics(model)
    entries = stats["model_stats"] if isinstance(stats, dict) else stats.model_stats
    entry = next(e for e in entries if (e["name"] if isinstance(e, dict) else e.name) == model)
    return int(entry["execution_count"] if isinstance(entry, dict) else entry.execution_count)


def test_infer_timeline_cli_prints_segments_and_the_whole_video(
    triton_server: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnserve.cli import main

    video = tmp_path / "story.mp4"
    video.write_bytes(_story(16))  # 32 frames: 4 s
    argv = ["infer", "--model", MODEL, str(video), "--timeline", "--window-s", "1", "--stride-s", "1"]
    assert main([*argv, "--top-k", "2", "--url", triton_server.grpc_url]) == 0
    printed = capsys.readouterr().out
    assert "timeline of story.mp4" in printed and "video: " in printed and "4 s at 8 fps" in printed
    assert printed.count("3.00") >= 1 and "label changes at" in printed
    assert main([*argv, "--json", "--url", triton_server.grpc_url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["file"] == str(video) and len(answer["segments"]) == 4 and answer["video"][0]["label"]


def test_async_client_timeline_matches_the_blocking_one(triton_server: Any) -> None:
    import asyncio

    from attnserve.clients.client import AsyncTritonClient, TritonClient
    from attnserve.clients.settings import ClientSettings

    payload = _story(12)  # 24 frames: 3 s
    settings = ClientSettings(url=triton_server.grpc_url, retries=0)

    async def timeline() -> Any:
        async with AsyncTritonClient(settings) as client:
            return await client.timeline(MODEL, payload, window_s=1.0, stride_s=1.0)

    asynchronous = asyncio.run(timeline())
    with TritonClient(settings) as client:
        blocking = client.timeline(MODEL, payload, window_s=1.0, stride_s=1.0)
    assert asynchronous.model_dump(exclude={"timings_s"}) == blocking.model_dump(exclude={"timings_s"})
    assert len(blocking.segments) == 3
