// Progress on stderr: a redrawn bar on a terminal, plain periodic lines otherwise (CI logs, pipes).

export interface Progress {
  update(done: number, failed: number): void;
  end(): void;
}

export interface ProgressPlan {
  label: string;
  /** requests planned, or 0 when the run is bounded by time */
  total: number;
  durationS?: number;
}

export function stderrProgress(plan: ProgressPlan, stream: NodeJS.WriteStream = process.stderr): Progress {
  const tty = stream.isTTY === true;
  const t0 = performance.now();
  let done = 0;
  let failed = 0;
  let lastDraw = 0;
  const frac = () => {
    const el = (performance.now() - t0) / 1000;
    if (plan.total > 0) return Math.min(1, done / plan.total);
    return plan.durationS ? Math.min(1, el / plan.durationS) : 0;
  };
  const text = () => {
    const el = (performance.now() - t0) / 1000;
    const count = plan.total > 0 ? `${done}/${plan.total}` : `${done} done, ${el.toFixed(0)}/${plan.durationS ?? '?'} s`;
    return `${plan.label} ${count} [${el.toFixed(1)} s${failed ? `, ${failed} failed` : ''}]`;
  };
  const draw = (final = false) => {
    if (tty) {
      const width = 30;
      const n = Math.round(frac() * width);
      stream.write(`\r\x1b[K[${'#'.repeat(n)}${'.'.repeat(width - n)}] ${text()}${final ? '\n' : ''}`);
    } else {
      stream.write(`${text()}\n`);
    }
  };
  // a terminal redraws often; a log gets a line every 5 s so it stays readable
  const timer = setInterval(() => draw(), tty ? 200 : 5000);
  timer.unref();
  return {
    update(d, f) {
      done = d;
      failed = f;
      const now = performance.now();
      if (tty && now - lastDraw > 50) {
        lastDraw = now;
        draw();
      }
    },
    end() {
      clearInterval(timer);
      draw(true);
    },
  };
}
