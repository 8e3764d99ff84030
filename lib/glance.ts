// OpenStack Glance v2 (images): the calls a shelve and an unshelve need, nothing more.
import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { ApplicationFailure } from '@temporalio/common';
import axios, { type AxiosInstance, isAxiosError } from 'axios';
import type { Config } from './config.js';

export interface GlanceImage {
  id: string;
  name: string | null;
  status: 'queued' | 'saving' | 'active' | 'killed' | 'deleted' | 'pending_delete' | 'uploading' | 'importing';
  owner: string | null;
  visibility: string;
  disk_format: string | null;
  container_format: string | null;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  /** Image properties are top-level keys in Glance v2. */
  [property: string]: unknown;
}

export interface ImageCreateRequest {
  id: string;
  name: string;
  owner: string;
  visibility: 'private' | 'shared' | 'public' | 'community';
  disk_format: string;
  container_format: string;
  min_ram?: number;
  min_disk?: number;
  [property: string]: unknown;
}

/** Who a request acts for: the instance's project and user (no-auth Glance trusts these headers). */
export interface RequestContext {
  projectId: string;
  userId: string;
}

/**
 * Counts and hashes the bytes passing through with sha512, as Glance does for its os_hash_value:
 * what is compared with Glance's record on upload and download. (Glance's md5 `checksum` would
 * cost as much again for nothing.) Each chunk is hashed where it is, on the stream's own thread:
 * a hashing thread needs a copy of every chunk, which cost about 100 MiB of memory and, on two
 * cores beside glance-api, bought no speed (bench/RESULTS.md).
 */
export class ImageDigest extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha512');

  constructor(private readonly onProgress: (bytes: number) => void = () => undefined) {
    super({ highWaterMark: 1024 * 1024 });
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

// Client errors that no retry can fix; 408, 409 and 429 may pass on their own.
function isPermanent(status: number | undefined): boolean {
  return status !== undefined && status >= 400 && status < 500 && ![408, 409, 429].includes(status);
}

function glanceFailure(what: string, error: unknown): ApplicationFailure {
  if (isAxiosError(error)) {
    const status = error.response?.status;
    const body: unknown = error.response?.data;
    const detail =
      typeof body === 'string'
        ? body
            .replace(/<[^>]+>/g, ' ')
            .replace(/\s+/g, ' ')
            .trim()
        : '';
    const reason = status ? `HTTP ${status}${detail ? `: ${detail}` : ''}` : error.message;
    return ApplicationFailure.create({
      type: 'GlanceError',
      message: `Glance ${what} failed: ${reason}`,
      nonRetryable: isPermanent(status),
      details: [{ status: status ?? null }],
      cause: error,
    });
  }
  return ApplicationFailure.create({
    type: 'GlanceError',
    message: `Glance ${what} failed: ${error instanceof Error ? error.message : String(error)}`,
    cause: error instanceof Error ? error : undefined,
  });
}

export class GlanceClient {
  private readonly http: AxiosInstance;

  constructor(private readonly config: Config['glance']) {
    this.http = axios.create({
      baseURL: `${config.url}/v2`,
      maxBodyLength: Infinity,
      maxContentLength: Infinity,
      timeout: 0,
      // Glance does not redirect. Following redirects would keep every byte of an upload in
      // memory, to send it again after one (follow-redirects): a whole disk image.
      maxRedirects: 0,
    });
  }

  private headers(context: RequestContext): Record<string, string> {
    if (this.config.authToken) return { 'X-Auth-Token': this.config.authToken };
    return { 'X-Roles': 'admin,member', 'X-Tenant-Id': context.projectId, 'X-User-Id': context.userId };
  }

  /** Creates the image record, or returns it when a retry finds it already made with this id. */
  async createImage(context: RequestContext, request: ImageCreateRequest): Promise<GlanceImage> {
    try {
      const { data } = await this.http.post<GlanceImage>('/images', request, { headers: this.headers(context) });
      return data;
    } catch (error) {
      if (isAxiosError(error) && error.response?.status === 409) {
        const existing = await this.getImage(context, request.id);
        if (existing) return existing;
      }
      throw glanceFailure(`create image ${request.id}`, error);
    }
  }

  /** The image, or null when Glance does not have it (deleted or never made). */
  async getImage(context: RequestContext, imageId: string): Promise<GlanceImage | null> {
    try {
      const { data } = await this.http.get<GlanceImage>(`/images/${imageId}`, { headers: this.headers(context) });
      return data;
    } catch (error) {
      if (isAxiosError(error) && error.response?.status === 404) return null;
      throw glanceFailure(`show image ${imageId}`, error);
    }
  }

  /** The images the context may see, optionally only those with this name. */
  async listImages(context: RequestContext, { name }: { name?: string } = {}): Promise<GlanceImage[]> {
    try {
      const { data } = await this.http.get<{ images: GlanceImage[] }>('/images', {
        headers: this.headers(context),
        params: name === undefined ? {} : { name },
      });
      return data.images;
    } catch (error) {
      throw glanceFailure('image list', error);
    }
  }

  async uploadImageData(
    context: RequestContext,
    imageId: string,
    data: Readable,
    size: number,
    signal?: AbortSignal,
  ): Promise<void> {
    try {
      await this.http.put(`/images/${imageId}/file`, data, {
        headers: { ...this.headers(context), 'Content-Type': 'application/octet-stream', 'Content-Length': size },
        signal,
      });
    } catch (error) {
      throw glanceFailure(`upload of image ${imageId}`, error);
    }
  }

  async downloadImageData(context: RequestContext, imageId: string, signal?: AbortSignal): Promise<Readable> {
    try {
      const response = await this.http.get<Readable>(`/images/${imageId}/file`, {
        headers: this.headers(context),
        responseType: 'stream',
        signal,
      });
      return response.data;
    } catch (error) {
      throw glanceFailure(`download of image ${imageId}`, error);
    }
  }

  /** Deletes the image; true when it was there, false when it was already gone. */
  async deleteImage(context: RequestContext, imageId: string): Promise<boolean> {
    try {
      await this.http.delete(`/images/${imageId}`, { headers: this.headers(context) });
      return true;
    } catch (error) {
      if (isAxiosError(error) && error.response?.status === 404) return false;
      throw glanceFailure(`delete of image ${imageId}`, error);
    }
  }
}
