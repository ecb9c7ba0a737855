from __future__ import annotations

import pytest

from client.sizing import SizeError, working_size


@pytest.mark.parametrize(
    ("render", "short", "expected"),
    [
        ((1920, 1080), 512, (912, 512)),  # 16:9 → 910.2 → 912
        ((1080, 1920), 512, (512, 912)),  # portrait: the short side is the width
        ((2048, 858), 512, (1224, 512)),  # scope
        ((512, 512), 512, (512, 512)),
        ((320, 180), 512, (912, 512)),  # a preview-sized render is painted at the model's size
        ((1920, 1080), 768, (1368, 768)),
    ],
)
def test_working_size_keeps_the_aspect_on_the_engines_grid(
    render: tuple[int, int], short: int, expected: tuple[int, int]
) -> None:
    size = working_size(render, short)
    assert size == expected
    assert all(side % 8 == 0 for side in size)
    assert abs(size[0] / size[1] - render[0] / render[1]) < 0.01


def test_bad_sizes_are_refused_with_a_sentence() -> None:
    with pytest.raises(SizeError, match="empty"):
        working_size((0, 1080), 512)
    with pytest.raises(SizeError, match="below 8 px"):
        working_size((1920, 1080), 4)
