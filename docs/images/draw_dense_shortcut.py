"""Draw docs/images/dense_shortcut.svg: one DSNet stage with its dense shortcuts (paper Eq. 12).

    python docs/images/draw_dense_shortcut.py      # any Python 3, no packages needed

A stage of four blocks: block 0 is an ordinary ResNet block; every later block l adds, to its
residual branch's output X_l, every earlier aggregation output Y_i normalized once (N) and scaled
by its learnable channel-wise weight W_l^i. The lower panel is DS2Net's extra shortcut inside a
bottleneck. Edit the constants below and rerun to redraw.
"""
import os.path as osp

OUT = osp.join(osp.dirname(osp.abspath(__file__)), 'dense_shortcut.svg')
W, H = 960, 500
ROW = 90                      # y of the main path
NY = 160                      # y of the N boxes
BLUE, GREY, ORANGE = '#1f62b4', '#e8e8e8', '#fde3c4'
STEP = 215                    # x distance between two blocks
Y_X = [215 + STEP * i for i in range(4)]          # Y_0 .. Y_3
PLUS_X = [None] + [Y_X[i] + 160 for i in range(3)]  # the sum of block l = 1..3
F_X = [None] + [Y_X[i] + 80 for i in range(3)]     # the residual branch F_l


def text(x, y, s, size=15, anchor='middle', color='black', style=''):
    return (f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" fill="{color}" '
            f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" {style}>{s}</text>')


def sym(base, sub='', sup=''):
    """``base`` with a subscript and a superscript, as tspans."""
    out = base
    if sub:
        out += f'<tspan baseline-shift="sub" font-size="70%">{sub}</tspan>'
    if sup:
        # back up so the superscript sits above the subscript
        dx = -0.55 * len(sub) if sub else 0
        out += f'<tspan dx="{dx}em" baseline-shift="super" font-size="70%">{sup}</tspan>'
    return out


def box(cx, cy, w, h, label, fill=GREY, size=15):
    return (f'<rect x="{cx - w / 2}" y="{cy - h / 2}" width="{w}" height="{h}" rx="6" '
            f'fill="{fill}" stroke="black" stroke-width="1.2"/>' + text(cx, cy + size / 3, label,
                                                                         size))


def circle(cx, cy, label, r=17, fill='white'):
    return (f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{fill}" stroke="black" '
            f'stroke-width="1.2"/>' + text(cx, cy + 5, label, 15))


def arrow(x1, y1, x2, y2, color='black', width=1.4):
    return (f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{color}" '
            f'stroke-width="{width}" marker-end="url(#head-{"b" if color == BLUE else "k"})"/>')


def main_panel():
    s = [text(20, 30, 'DSNet: one stage, dense weighted normalized shortcuts (paper Eq. 12, '
                      'Fig. 3b)', 17, 'start', style='font-weight="bold"')]
    s.append(text(25, ROW + 5, 'x', 16))
    s.append(arrow(35, ROW, 82, ROW))
    s.append(box(130, ROW, 92, 40, 'block 0'))
    s.append(text(130, ROW + 38, '(a ResNet block)', 12, color='#555'))
    s.append(arrow(176, ROW, Y_X[0] - 19, ROW))
    for i, x in enumerate(Y_X):
        s.append(circle(x, ROW, sym('Y', str(i)), r=19, fill='#ffffff'))
    for l in (1, 2, 3):
        y_prev, f, p = Y_X[l - 1], F_X[l], PLUS_X[l]
        s.append(arrow(y_prev + 19, ROW, f - 30, ROW))
        s.append(box(f, ROW, 58, 40, sym('F', str(l))))
        s.append(arrow(f + 29, ROW, p - 17, ROW))
        s.append(text((f + p) / 2 + 3, ROW - 8, sym('X', str(l)), 14))
        s.append(circle(p, ROW, '+'))
        s.append(arrow(p + 17, ROW, Y_X[l] - 21, ROW))
        s.append(text((p + Y_X[l]) / 2 + 1, ROW - 8, 'act', 12, color='#555'))
    s.append(arrow(Y_X[3] + 19, ROW, Y_X[3] + 62, ROW))
    s.append(text(Y_X[3] + 78, ROW + 5, 'out', 14))
    # one N per source, computed once and shared by every later block
    for i in range(3):
        x = Y_X[i]
        s.append(arrow(x, ROW + 19, x, NY - 15))
        s.append(box(x, NY, 34, 28, 'N', fill=ORANGE))
    # the dense shortcuts: N(Y_i) -> the sum of block l, scaled by W_l^i
    for i in range(3):
        for l in range(i + 1, 4):
            x0, x1 = Y_X[i], PLUS_X[l] + 7 * (i - (l - 1) / 2)  # spread the arrivals
            d = 48 * (l - i) + 14 * i
            y0, y1 = NY + 14, ROW + 17
            c = y0 + d
            s.append(f'<path d="M {x0} {y0} C {x0} {c}, {x1} {c}, {x1} {y1 + 8}" fill="none" '
                     f'stroke="{BLUE}" stroke-width="1.6" '
                     f'marker-end="url(#head-b)"/>')
            ym = 0.125 * y0 + 0.75 * c + 0.125 * (y1 + 8)
            xm = (x0 + x1) / 2
            s.append(f'<rect x="{xm - 19}" y="{ym - 13}" width="38" height="22" fill="white"/>')
            s.append(text(xm, ym + 4, sym('W', str(l), str(i)), 15, color=BLUE))
    eq = ('<tspan font-style="italic">Y</tspan><tspan baseline-shift="sub" font-size="70%">l'
          '</tspan> = act( <tspan font-style="italic">X</tspan><tspan baseline-shift="sub" '
          'font-size="70%">l</tspan> + &#931;<tspan baseline-shift="sub" font-size="70%">i&lt;l'
          '</tspan> <tspan font-style="italic">W</tspan><tspan baseline-shift="sub" '
          'font-size="70%">l</tspan><tspan dx="-0.2em" baseline-shift="super" font-size="70%">i'
          '</tspan> &#183; N(<tspan font-style="italic">Y</tspan><tspan baseline-shift="sub" '
          'font-size="70%">i</tspan>) ),   <tspan font-style="italic">X</tspan><tspan '
          'baseline-shift="sub" font-size="70%">l</tspan> = <tspan font-style="italic">F'
          '</tspan><tspan baseline-shift="sub" font-size="70%">l</tspan>(<tspan '
          'font-style="italic">Y</tspan><tspan baseline-shift="sub" font-size="70%">l-1</tspan>)')
    s.append(text(W / 2, 330, eq, 17))
    s.append(text(W / 2, 352, 'F: the residual branch (bottleneck); N: GroupNorm without affine, '
                              'computed once per Y and shared; W: learnable channel-wise weights',
                  13, color='#333'))
    s.append(text(W / 2, 370, "act: ResNet's ReLU after the sum, or none (the backbone's "
                              'shortcut_act)', 13, color='#333'))
    return s


def ds2_panel():
    y, top = 445, 410
    s = [text(20, top, 'DS2Net: also inside every stride-1 bottleneck, around the 3x3 conv',
              15, 'start', style='font-weight="bold"')]
    s.append(text(60, y + 5, 'u', 16))
    s.append(arrow(70, y, 128, y))
    s.append(box(190, y, 120, 36, '3x3 conv, BN', size=14))
    s.append(arrow(250, y, 343, y))
    s.append(circle(360, y, '+'))
    s.append(arrow(377, y, 415, y))
    s.append(text(440, y + 5, 'act', 13, color='#555'))
    s.append(arrow(460, y, 498, y))
    s.append(box(540, y, 80, 36, '1x1 conv', size=14))
    # the inner shortcut: N(u) scaled by w
    s.append(f'<path d="M 100 {y} C 100 {y + 48}, 360 {y + 48}, 360 {y + 25}" fill="none" '
             f'stroke="{BLUE}" stroke-width="1.6" marker-end="url(#head-b)"/>')
    s.append(f'<rect x="190" y="{y + 26}" width="86" height="24" fill="white"/>')
    s.append(text(233, y + 43, 'w &#183; N(u)', 15, color=BLUE))
    s.append(text(620, y + 5, 'the rest of the block and the stage as in DSNet', 13, 'start',
                  color='#333'))
    return s


def main():
    defs = ''.join(
        f'<marker id="head-{k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        f'fill="{c}"/></marker>' for k, c in (('k', 'black'), ('b', BLUE)))
    body = main_panel() + ds2_panel()
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}"><defs>{defs}</defs>'
           f'<rect width="{W}" height="{H}" fill="white"/>' + '\n'.join(body) + '</svg>\n')
    with open(OUT, 'w') as f:
        f.write(svg)
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
