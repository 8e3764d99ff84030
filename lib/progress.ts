// What a compute activity reports in its heartbeat: written by activities/compute/, read by the
// CLI, the API and the Web UI (lib/actions.ts), and by a retry of the same activity.

/** What the CLI and the Web UI read from an activity's heartbeat. */
export interface Progress {
  step: string;
  bytesDone?: number;
  bytesTotal?: number;
  /**
   * The hash of what an upload sent, once sent: a retry of the same snapshot finds it here, and
   * accepts an image it finds active only with this hash.
   */
  uploaded?: UploadedSnapshot;
}

/** A snapshot this shelve uploaded, as Glance must have stored it. */
export interface UploadedSnapshot {
  size: number;
  osHashAlgo: string;
  osHashValue: string;
}
