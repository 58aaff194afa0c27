import torch
from matplotlib.figure import Figure
from PIL import Image

from vit_tutorial import ViT
from vit_tutorial.data import normalise
from vit_tutorial.viz import (
    attention_gif,
    attention_triptych,
    class_samples,
    compare_maps,
    heads_figure,
    image_rows,
    layers_figure,
    matrix_figure,
    overlay_pipeline,
    patch_grid,
    position_similarity,
)

from .conftest import TINY, make_split


def _attentions(n: int = 1):
    torch.manual_seed(0)
    images = torch.rand(n, 3, 32, 32)
    _, attentions = ViT(TINY).eval()(normalise(images), return_attention=True)
    return images, attentions.detach()


def test_attention_figures_have_one_panel_per_layer_head_and_step():
    images, attentions = _attentions()
    image, one = images[0], attentions[0]
    assert len(attention_triptych(image, torch.rand(4, 4)).axes) == 3
    assert len(overlay_pipeline(image, one).axes) == TINY.heads + 1 + 5
    drawn = [ax for ax in layers_figure(image, one).axes if ax.images]
    assert len(drawn) == 2 * (TINY.depth + 1)
    assert layers_figure(image, one, ncols=2).get_size_inches()[1] > layers_figure(image, one).get_size_inches()[1]
    assert len(heads_figure(image, one, layer=0).axes) == 2 * (TINY.heads + 1)
    grids = {"last layer": torch.rand(3, 4, 4), "rollout": torch.rand(3, 4, 4)}
    assert len(compare_maps(torch.rand(3, 3, 32, 32), grids).axes) == 9


def test_gif_is_written_with_one_frame_per_layer(tmp_path):
    images, attentions = _attentions()
    path = attention_gif(images[0], attentions[0], tmp_path / "sub" / "layers.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == TINY.depth


def test_other_figures_are_figures():
    split = make_split(40)
    assert isinstance(class_samples(split, per_class=2), Figure)
    rows = image_rows({"original": split.images[:4], "flipped": split.images[:3].flip(-1)})
    assert len(rows.axes) == 2 * 4 and [ax.get_ylabel() for ax in rows.axes[::4]] == ["original", "flipped"]
    assert len(rows.axes[7].images) == 0  # the shorter row leaves its last panel empty
    assert len(patch_grid(split.images[0], 8).axes) == 1 + 16
    assert isinstance(matrix_figure(torch.rand(5, 5), annotate=True), Figure)
    assert len(position_similarity(torch.randn(16, 8), 4).axes) == 16 + 1


def test_grouped_bars_and_lines_with_their_own_x():
    from vit_tutorial.viz import bar_chart, line_plot

    grouped = bar_chart({"ViT": [50.0, 60.0], "ResNet": [70.0, 80.0]}, ["cat", "dog"], title="recall")
    ax = grouped.axes[0]
    assert len(ax.patches) == 4 and [t.get_text() for t in ax.get_legend().get_texts()] == ["ViT", "ResNet"]
    assert ax.patches[0].get_x() < ax.patches[2].get_x() < ax.patches[1].get_x()  # side by side within a class
    lines = line_plot({"a": [1, 2, 3], "b": [1, 2]}, x={"a": [0, 10, 20], "b": [5, 50]})
    assert list(lines.axes[0].lines[1].get_xdata()) == [5, 50]
    assert [t.get_text() for t in ax.texts] == ["50", "60", "70", "80"]  # whole numbers, not 50.0000
    assert [t.get_text() for t in bar_chart([0.0520672, 2407818.0], ["a", "b"]).axes[0].texts] == [
        "0.0521",
        "2,407,818",
    ]
    # three series: no labels to overlap; twelve lines: twelve distinct colours, the legend beside the plot
    assert not bar_chart({"x": [1.5], "y": [2.5], "z": [3.5]}, ["a"]).axes[0].texts
    figure = line_plot({f"layer {i}": [i, i + 1] for i in range(12)})
    twelve = figure.axes[0]
    assert len({tuple(line.get_color()) for line in twelve.lines}) == 12
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)  # constrained layout places the legend
    legend, plot = twelve.get_legend().get_window_extent(renderer), twelve.get_window_extent(renderer)
    assert legend.x0 >= plot.x1 and legend.x1 <= figure.bbox.x1  # beside the plot, inside the figure


def test_diagrams_carry_the_configs_shapes():
    from vit_tutorial import ViTConfig
    from vit_tutorial.diagrams import attention_diagram, block_diagram, vit_diagram

    def texts(figure):
        return " ".join(t.get_text() for t in figure.axes[0].texts) + figure.axes[0].get_title()

    card = texts(vit_diagram())
    assert "16 patches of 8×8" in card and "17×128" in card and "12 × pre-norm" in card and "128 → 10" in card
    small = ViTConfig(patch_size=4, dim=64, depth=3, heads=2, mlp_dim=96)
    assert "65×64" in texts(vit_diagram(small)) and "3 × pre-norm" in texts(vit_diagram(small))
    assert "64 → 96 → 64" in texts(block_diagram(small)) and "2 heads of 32" in texts(block_diagram(small))
    assert "65×65" in texts(attention_diagram(small)) and "√32" in texts(attention_diagram(small))
