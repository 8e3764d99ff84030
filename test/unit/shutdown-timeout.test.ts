// The clean-shutdown wait a shelve gives a guest: the image's os_shutdown_timeout when it has a
// valid one, as Nova reads it from the instance's system_metadata.
import { describe, expect, it } from 'vitest';
import { imageShutdownTimeout } from '../../workflows/shelve.js';

describe('imageShutdownTimeout', () => {
  it.each([
    ['30', 30],
    ['0', 0],
    [' 120 ', 120],
  ])('takes the image property %j', (value, seconds) => {
    expect(imageShutdownTimeout({ systemMetadata: { image_os_shutdown_timeout: value } })).toBe(seconds);
  });

  it.each([['-5'], ['1.5'], ['soon'], [''], ['99999999999999999999']])(
    'ignores %j, which is not a whole number >= 0',
    (value) => {
      expect(imageShutdownTimeout({ systemMetadata: { image_os_shutdown_timeout: value } })).toBeUndefined();
    },
  );

  it('has none for an image without the property', () => {
    expect(imageShutdownTimeout({ systemMetadata: { image_hw_disk_bus: 'virtio' } })).toBeUndefined();
  });
});
