import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import type { GlanceImage } from '../../lib/glance.js';
import { expectedHash, ImageDigest, nodeHashAlgorithm } from '../../lib/image-hash.js';

const image = (fields: Partial<GlanceImage>) =>
  ({ os_hash_algo: null, os_hash_value: null, checksum: null, ...fields }) as GlanceImage;

describe("an image's hash", () => {
  it("is checked with the algorithm Glance names, in Python's spelling or Node's", () => {
    expect(nodeHashAlgorithm('sha512')).toBe('sha512');
    expect(nodeHashAlgorithm('sha3_512')).toBe('sha3-512');
    expect(() => nodeHashAlgorithm('no_such_hash')).toThrow("hash algorithm 'no_such_hash' is not supported");
  });

  it("is Glance's os_hash_value, or its md5 checksum for an image from before multihash", () => {
    expect(expectedHash(image({ os_hash_algo: 'sha256', os_hash_value: 'ab', checksum: 'cd' }))).toEqual({
      algorithm: 'sha256',
      value: 'ab',
    });
    expect(expectedHash(image({ checksum: 'cd' }))).toEqual({ algorithm: 'md5', value: 'cd' });
    expect(expectedHash(image({}))).toBeNull();
  });

  it('is computed over the bytes that pass, with that algorithm', async () => {
    const data = Buffer.from('guest disk bytes');
    for (const algorithm of ['sha256', 'sha3_512', 'md5']) {
      const digest = new ImageDigest(algorithm);
      await pipeline(Readable.from([data]), digest, async function* (source) {
        for await (const chunk of source) yield chunk;
      });
      const node = nodeHashAlgorithm(algorithm);
      expect(digest.result()).toEqual({ osHashValue: createHash(node).update(data).digest('hex'), bytes: data.length });
    }
  });
});
