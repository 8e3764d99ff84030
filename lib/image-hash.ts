// The hash of an image's data, as Glance computes and records it: what an upload and a download
// are checked against.
import { createHash, getHashes, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { GlanceImage } from './glance.js';

/**
 * Node's name for one of Python's hashlib names, which Glance's `hashing_algorithm` and images'
 * `os_hash_algo` use (sha3_512 is sha3-512 here); refuses one Node does not have.
 */
export function nodeHashAlgorithm(hashlibName: string): string {
  const name = hashlibName.toLowerCase().replace(/_/g, '-');
  if (!getHashes().includes(name)) throw new Error(`hash algorithm '${hashlibName}' is not supported`);
  return name;
}

/**
 * Counts and hashes the bytes passing through with `algorithm` (a hashlib name, as Glance's
 * os_hash_algo): what is compared with Glance's os_hash_value on upload and download. Each chunk is
 * hashed where it is, on the stream's own thread: a hashing thread needs a copy of every chunk,
 * which cost about 100 MiB of memory and, on two cores beside glance-api, bought no speed
 * (bench/RESULTS.md).
 */
export class ImageDigest extends Transform {
  bytes = 0;
  private readonly hash: Hash;

  constructor(
    readonly algorithm: string,
    private readonly onProgress: (bytes: number) => void = () => undefined,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.hash = createHash(nodeHashAlgorithm(algorithm));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    this.onProgress(this.bytes);
    callback(null, chunk);
  }

  /**
   * Call once, when the stream has passed all its bytes: not at the stream's end, which a reader
   * that takes only Content-Length bytes (an HTTP upload) may never read.
   */
  result(): { osHashValue: string; bytes: number } {
    return { osHashValue: this.hash.digest('hex'), bytes: this.bytes };
  }
}

/**
 * The hash an image's data must have, as Glance records it: os_hash_value with its os_hash_algo,
 * or, for an image from before multihash, the md5 `checksum`; null when Glance records none.
 */
export function expectedHash(image: GlanceImage): { algorithm: string; value: string } | null {
  if (image.os_hash_algo && image.os_hash_value) return { algorithm: image.os_hash_algo, value: image.os_hash_value };
  if (image.checksum) return { algorithm: 'md5', value: image.checksum };
  return null;
}
