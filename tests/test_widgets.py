"""Static sweeps (sgdlab.widgets): one frame per setting, the widget's own callback, one frame visible."""

import base64
import re

import matplotlib
import matplotlib.pyplot as plt
import pytest

from sgdlab.widgets import static_sweep


def draw_line(slope, name="line"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, slope])
    ax.set(xlabel="x (units)", ylabel="y (units)", title=f"{name}: slope {slope}")
    plt.show()  # held back by static_sweep
    print(f"slope {slope}")


def frames(html):
    return re.findall(r'<img class="sgdlab-sweep-frame"[^>]*>', html)


def test_every_setting_becomes_one_frame_with_its_label_and_printed_caption():
    sweep = static_sweep(draw_line, [dict(slope=s) for s in (1, 2, 3)], title="lines", selected=1)
    html = sweep._repr_html_()
    assert len(sweep) == 3 and len(frames(html)) == 3
    assert sweep.labels == ["slope=1", "slope=2", "slope=3"]
    assert sweep.captions == ["slope 1", "slope 2", "slope 3"]
    assert [('hidden' in f.split("src=")[0]) for f in frames(html)] == [True, False, True]  # only the selected one shows
    assert html.count('class="sgdlab-sweep-slider"') == 1 and 'value="1"' in html and 'max="2"' in html
    assert '<span class="sgdlab-sweep-label">slope=2</span>' in html


def test_frames_are_the_figures_the_callback_drew():
    sweep = static_sweep(draw_line, [dict(slope=1), dict(slope=-1), dict(slope=1)], title="lines")
    assert all(png.startswith(b"\x89PNG") for png in sweep.pngs)
    assert sweep.pngs[0] == sweep.pngs[2] != sweep.pngs[1]
    html = sweep._repr_html_()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert [base64.b64decode(e) for e in embedded] == sweep.pngs
    assert not plt.get_fignums()  # no figure left open to be shown twice


def test_text_is_escaped_in_labels_titles_and_captions():
    sweep = static_sweep(draw_line, [dict(slope=1, name='<b>"x"</b>'), dict(slope=2, name="y")], title="a < b")
    html = sweep._repr_html_()
    assert "<b>" not in html and "&lt;b&gt;&quot;x&quot;&lt;/b&gt;" in html and "a &lt; b" in html


def test_bad_arguments_are_refused_with_the_parameter_named():
    with pytest.raises(ValueError, match="settings must be a list of at least 2"):
        static_sweep(draw_line, [dict(slope=1)], title="t")
    with pytest.raises(ValueError, match="settings must hold dicts"):
        static_sweep(draw_line, [1, 2], title="t")
    with pytest.raises(ValueError, match=r"selected must be an int in 0..1, got selected=2"):
        static_sweep(draw_line, [dict(slope=1), dict(slope=2)], title="t", selected=2)
    with pytest.raises(ValueError, match="draw must be the widget's callback"):
        static_sweep("draw_line", [dict(slope=1), dict(slope=2)], title="t")
    with pytest.raises(ValueError, match=r"draw\(slope=1\) drew no Matplotlib figure"):
        static_sweep(lambda slope: print(slope), [dict(slope=1), dict(slope=2)], title="t")


def test_a_sweep_that_is_not_enabled_calls_nothing_and_says_so():
    calls = []
    sweep = static_sweep(lambda slope: calls.append(slope), [dict(slope=1), dict(slope=2)], title="lines", enabled=False)
    assert calls == [] and "not rendered with this preset" in repr(sweep) and "2 frames" in repr(sweep)


def test_the_setting_label_sits_above_the_frames_and_an_empty_caption_is_left_out():
    sweep = static_sweep(lambda slope: draw_line(slope) if slope else plt.subplots(),
                         [dict(slope=1), dict(slope=0)], title="lines", selected=1)
    html = sweep._repr_html_()
    assert html.index('class="sgdlab-sweep-label"') < html.index('class="sgdlab-sweep-frame"')
    assert re.search(r'<pre class="sgdlab-sweep-caption"[^>]* hidden>', html)  # frame 1 printed nothing
    assert 'caption.hidden = !f.dataset.caption' in html                     # and frame 0's caption shows


def test_frames_have_the_book_styles_resolution_and_nothing_is_cropped(tmp_path):
    from PIL import Image

    from sgdlab.plots import BOOK_STYLE, use_book_style

    with matplotlib.rc_context():
        use_book_style()
        sweep = static_sweep(draw_line, [dict(slope=1), dict(slope=2)], title="lines")
    image = Image.open(__import__("io").BytesIO(sweep.pngs[0]))
    assert round(image.info["dpi"][0]) == BOOK_STYLE["figure.dpi"]
    # a 3 x 2 inch figure at 150 dpi, its frame fitted to what was drawn: the y label and the
    # title reach outside this small figure's area and are kept, not cut off
    assert image.width > 3 * 150 and image.height > 2 * 150
