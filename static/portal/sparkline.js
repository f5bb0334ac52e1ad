/* A 15-minute sparkline of one vital on a bed tile, drawn with uPlot (axes, legend and cursor
 * hidden). Points are kept in 10 s buckets, like the snapshot's, so a live value updates the
 * newest bucket's mean instead of adding a point per reading. Plain script: defines
 * window.PortalSparkline. */
(function () {
  "use strict";

  const WINDOW_SECONDS = 15 * 60;
  const BUCKET_SECONDS = 10;
  // A hole longer than this is drawn as a gap, never bridged by a line: no data is no data.
  const GAP_SECONDS = 3 * BUCKET_SECONDS;

  function yRange(minSpan) {
    return function (u, min, max) {
      if (min == null || max == null) {
        return [0, 1];
      }
      const span = max - min;
      if (span < minSpan) {
        const mid = (min + max) / 2;
        return [mid - minSpan / 2, mid + minSpan / 2];
      }
      return [min - span * 0.1, max + span * 0.1];
    };
  }

  class Sparkline {
    /**
     * @param {HTMLElement} container
     * @param {{width?: number, height?: number, minSpan?: number, stroke?: string}} options
     */
    constructor(container, options) {
      this.container = container;
      this.width = options.width || 96;
      this.height = options.height || 22;
      this.minSpan = options.minSpan || 4;
      this.stroke = options.stroke || "#8fb8de";
      this.times = []; // bucket start, epoch seconds
      this.means = [];
      this.counts = [];
      this.plot = null;
      this.nowSeconds = Date.now() / 1000;
      this.dirty = true;
      // Spread the periodic redraws of many sparklines over time.
      this.drawnAt = Date.now() - Math.random() * 10000;
    }

    /** Replace all points: [[epoch ms, value], …] in time order. */
    reset(points) {
      this.times = [];
      this.means = [];
      this.counts = [];
      for (const [ms, value] of points) {
        this.add(ms, value);
      }
      this.dirty = true;
    }

    add(ms, value) {
      if (typeof value !== "number" || !Number.isFinite(value)) {
        return;
      }
      const bucket = Math.floor(ms / 1000 / BUCKET_SECONDS) * BUCKET_SECONDS;
      const last = this.times.length - 1;
      if (last >= 0 && this.times[last] === bucket) {
        const n = this.counts[last] + 1;
        this.means[last] += (value - this.means[last]) / n;
        this.counts[last] = n;
      } else if (last < 0 || bucket > this.times[last]) {
        this.times.push(bucket);
        this.means.push(value);
        this.counts.push(1);
      } else {
        return; // older than what is drawn: the snapshot after a reconnect brings it
      }
      this.dirty = true;
    }

    _series(nowSeconds) {
      const from = nowSeconds - WINDOW_SECONDS;
      let start = 0;
      while (start < this.times.length && this.times[start] < from - BUCKET_SECONDS) {
        start += 1;
      }
      if (start > 0) {
        this.times.splice(0, start);
        this.means.splice(0, start);
        this.counts.splice(0, start);
      }
      const xs = [];
      const ys = [];
      for (let i = 0; i < this.times.length; i += 1) {
        if (i > 0 && this.times[i] - this.times[i - 1] > GAP_SECONDS) {
          xs.push(this.times[i - 1] + BUCKET_SECONDS);
          ys.push(null);
        }
        xs.push(this.times[i]);
        ys.push(this.means[i]);
      }
      const lastTime = this.times[this.times.length - 1];
      if (lastTime !== undefined && nowSeconds - lastTime > GAP_SECONDS) {
        xs.push(lastTime + BUCKET_SECONDS);
        ys.push(null);
      }
      return [xs, ys];
    }

    /** Draw now, ``width`` px wide (the caller batches calls inside one animation frame). */
    draw(nowMs, width) {
      this.nowSeconds = nowMs / 1000;
      const data = this._series(this.nowSeconds);
      if (width && width !== this.width) {
        this.width = width;
        if (this.plot !== null) {
          this.plot.setSize({ width: this.width, height: this.height });
        }
      }
      if (this.plot === null) {
        const self = this;
        this.plot = new window.uPlot(
          {
            width: this.width,
            height: this.height,
            pxAlign: false,
            padding: [2, 1, 2, 1],
            cursor: { show: false },
            select: { show: false },
            legend: { show: false },
            axes: [{ show: false }, { show: false }],
            scales: {
              x: { time: true, range: () => [self.nowSeconds - WINDOW_SECONDS, self.nowSeconds] },
              y: { range: yRange(this.minSpan) },
            },
            series: [
              {},
              {
                stroke: this.stroke,
                width: 1.25,
                spanGaps: false,
                points: { show: (u) => u.data[0].length < 3, size: 3 },
              },
            ],
          },
          data,
          this.container,
        );
      } else {
        this.plot.setData(data);
      }
      this.dirty = false;
      this.drawnAt = Date.now(); // client clock: only schedules redraws
    }

    destroy() {
      if (this.plot !== null) {
        this.plot.destroy();
        this.plot = null;
      }
    }
  }

  window.PortalSparkline = Sparkline;
})();
