"""An SVG of one or more runs, side by side in three panels: download rate by upload cap (each
leecher a dot: tit-for-tat shows as a rising cloud), completion times (the share of leechers
done by each second), and the lowest piece availability over time (0 would be a lost piece).
Plain SVG text, no plotting library."""
import math
from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
W, H = 300, 230  # one panel
M = (48, 16, 36, 30)  # left, right, bottom, top margins


class Panel:
    def __init__(self, x0, title, xlabel, ylabel, xmax, ymax, xlog=False):
        self.x0, self.xmax, self.ymax, self.xlog = x0, xmax or 1, ymax or 1, xlog
        self.parts = []
        left, right, bottom, top = M
        self.pw, self.ph = W - left - right, H - top - bottom
        self.ox, self.oy = x0 + left, top + self.ph
        self.parts.append('<text x="%g" y="16" font-weight="bold">%s</text>' % (x0 + left, escape(title)))
        self.parts.append('<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#888"/>'
                          % (self.ox, top, self.pw, self.ph))
        self.parts.append('<text x="%g" y="%g" text-anchor="middle">%s</text>'
                          % (self.ox + self.pw / 2, H - 6, escape(xlabel)))
        self.parts.append('<text transform="translate(%g,%g) rotate(-90)" text-anchor="middle">%s</text>'
                          % (x0 + 12, top + self.ph / 2, escape(ylabel)))
        for frac in (0, 0.5, 1):
            self.parts.append('<text x="%g" y="%g" text-anchor="end">%s</text>'
                              % (self.ox - 3, self.oy - frac * self.ph + 4, fmt(frac * self.ymax)))
            self.parts.append('<text x="%g" y="%g" text-anchor="middle">%s</text>'
                              % (self.ox + frac * self.pw, self.oy + 14, fmt(self.xval(frac))))

    def xval(self, frac):
        return self.xmax ** frac if self.xlog else frac * self.xmax

    def xy(self, x, y):
        if self.xlog:
            fx = math.log(max(x, 1)) / math.log(self.xmax) if self.xmax > 1 else 0
        else:
            fx = x / self.xmax
        return self.ox + fx * self.pw, self.oy - min(y / self.ymax, 1.05) * self.ph

    def dot(self, x, y, color):
        px, py = self.xy(x, y)
        self.parts.append('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s" fill-opacity="0.7"/>' % (px, py, color))

    def line(self, points, color):
        if points:
            path = " ".join("%.1f,%.1f" % self.xy(x, y) for x, y in points)
            self.parts.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>' % (path, color))


def fmt(v):
    return "%d" % v if v >= 10 or v == int(v) else "%.1f" % v


def steps(times):
    """Points of the share of leechers done by each time (a step line)."""
    done = sorted(t for t in times if t is not None)
    points, n = [(0, 0)], len(times)
    for i, t in enumerate(done):
        points += [(t, i / n), (t, (i + 1) / n)]
    return points


def svg(runs, labels):
    leechers = [[p for p in r["peers_detail"] if p["class"] != "seed"] for r in runs]
    caps = [p["upload_cap_kib"] for ls in leechers for p in ls] or [1]
    rates = [p["download_mib_s"] or 0 for ls in leechers for p in ls] or [1]
    times = [p["completion_s"] or 0 for ls in leechers for p in ls] + [1]
    avail = [a[1] for r in runs for a in r["availability"]] + [1]
    span = max([a[0] for r in runs for a in r["availability"]] + times)
    panels = [
        Panel(0, "download rate by upload cap", "upload cap KiB/s (log)", "MiB/s", max(caps) * 1.2, max(rates) * 1.1, True),
        Panel(W, "leechers done", "seconds", "share done", max(times) * 1.05, 1),
        Panel(2 * W, "lowest piece availability", "seconds", "copies", span * 1.05, max(avail) * 1.1),
    ]
    for k, (run, ls) in enumerate(zip(runs, leechers)):
        color = COLORS[k % len(COLORS)]
        for p in ls:
            panels[0].dot(p["upload_cap_kib"] * (1 + 0.08 * (k - (len(runs) - 1) / 2)), p["download_mib_s"] or 0, color)
        panels[1].line(steps([p["completion_s"] for p in ls]), color)
        panels[2].line([(t, m) for t, m, _ in run["availability"]], color)
        if run.get("seed_left_s") is not None:
            x, _ = panels[2].xy(run["seed_left_s"], 0)
            panels[2].parts.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-dasharray="3,3"/>'
                                   % (x, x, M[3], H - M[2], color))
    legend = ['<text x="%d" y="%d" fill="%s">%s</text>' % (10 + 200 * k, H + 16, COLORS[k % len(COLORS)], escape(label))
              for k, label in enumerate(labels)]
    body = "\n".join(part for p in panels for part in p.parts) + "\n" + "\n".join(legend)
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">\n'
            '<rect width="100%%" height="100%%" fill="white"/>\n%s\n</svg>\n' % (3 * W, H + 24, body))
