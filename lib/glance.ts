// OpenStack Glance v2 (images): the calls a shelve and an unshelve need, nothing more. Their
// failures are made in lib/glance-errors.ts, image hashes checked with lib/image-hash.ts.
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/common';
import axios, { type AxiosInstance, type InternalAxiosRequestConfig, isAxiosError } from 'axios';
import type { Config } from './config.js';
import { glanceFailure, requestLine, StaleTokenError } from './glance-errors.js';
import { KeystoneSession } from './keystone-session.js';

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
  /** The request's own project when absent. */
  owner?: string;
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

/** True when axios can send this body again: not a stream, which the first attempt consumed. */
function replayable(data: unknown): boolean {
  return !(data !== null && typeof data === 'object' && typeof (data as { pipe?: unknown }).pipe === 'function');
}

/** Marks a request already sent again after a 401, so it is never retried twice. */
/** How many times unprotectAndDelete sends its pair of calls before a "protected" refusal stands. */
const PROTECTED_DELETE_ATTEMPTS = 5;

/** Glance refused a delete because the image is protected (its 403 says so). */
function refusedAsProtected(error: unknown): boolean {
  if (!(error instanceof ApplicationFailure)) return false;
  const [details] = (error.details ?? []) as { status?: number | null }[];
  return details?.status === 403 && error.message.includes('is protected');
}

const RETRIED = Symbol('retried after a 401');
/** The token a request carried and whether it was new, to judge a 401. */
const TOKEN_USED = Symbol('token used');

type SessionRequestConfig = InternalAxiosRequestConfig & {
  [RETRIED]?: boolean;
  [TOKEN_USED]?: { token: string; renewed: boolean };
};

export class GlanceClient {
  private readonly http: AxiosInstance;

  /** The Keystone session of the service credentials, when Glance is Keystone-protected. */
  private readonly session: KeystoneSession | undefined;

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
    const { auth } = config;
    if (auth.kind !== 'keystone') return;
    const session = new KeystoneSession(auth.keystoneUrl, auth.credentials);
    this.session = session;
    // Every request carries the session's current token.
    this.http.interceptors.request.use(async (request: SessionRequestConfig) => {
      const used = await session.token();
      request[TOKEN_USED] = used;
      request.headers.set('X-Auth-Token', used.token);
      return request;
    });
    // A 401 for a token that was not new: it was revoked or expired early. Authenticate again and
    // send the request once more; a spent stream body cannot be, so that fails, retryably.
    this.http.interceptors.response.use(undefined, async (error: unknown) => {
      if (!isAxiosError(error) || error.response?.status !== 401 || !error.config) throw error;
      const request = error.config as SessionRequestConfig;
      const used = request[TOKEN_USED];
      if (!used || used.renewed || request[RETRIED]) throw error;
      session.invalidate(used.token);
      if (!replayable(request.data)) throw new StaleTokenError(requestLine(request));
      request[RETRIED] = true;
      return this.http.request(request);
    });
  }

  /** Headers that say who a request acts for; a Keystone token is added to each request as it leaves. */
  private headers(context: RequestContext): Record<string, string> {
    if (this.session) return {};
    // What Keystone's auth_token middleware would tell Glance of a caller it had checked.
    return {
      'X-Identity-Status': 'Confirmed',
      'X-Roles': 'admin,member',
      'X-Tenant-Id': context.projectId,
      'X-User-Id': context.userId,
    };
  }

  /** The headers a request to Glance needs, token included, for another HTTP client (the bench's curl). */
  async requestHeaders(context: RequestContext): Promise<Record<string, string>> {
    if (!this.session) return this.headers(context);
    try {
      return { 'X-Auth-Token': (await this.session.token()).token };
    } catch (error) {
      throw glanceFailure('authentication', error);
    }
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

  /**
   * The images the context may see, optionally only those with this name, owner or status: every
   * page of them (Glance answers 25 at a time unless asked).
   */
  async listImages(
    context: RequestContext,
    filters: { name?: string; owner?: string; status?: GlanceImage['status'] } = {},
  ): Promise<GlanceImage[]> {
    const images: GlanceImage[] = [];
    try {
      let marker: string | undefined;
      do {
        const { data } = await this.http.get<{ images: GlanceImage[]; next?: string }>('/images', {
          headers: this.headers(context),
          params: { ...filters, ...(marker ? { marker } : {}) },
        });
        images.push(...data.images);
        // Glance's `next` link means another page, which starts after the last image of this one.
        marker = data.next && data.images.length > 0 ? data.images.at(-1)!.id : undefined;
      } while (marker);
      return images;
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

  /** Who owns shelve snapshots: the service's own project, where no tenant reaches them. */
  get snapshotContext(): RequestContext {
    return { projectId: this.config.snapshotProject, userId: 'vm-shelve' };
  }

  /** The hash Glance computes of what it stores (its `hashing_algorithm`): uploads hash the same. */
  get hashingAlgorithm(): string {
    return this.config.hashingAlgorithm;
  }

  /** Sets the image's `protected` flag; true when the image was there, false when it was gone. */
  async setProtected(context: RequestContext, imageId: string, value: boolean): Promise<boolean> {
    try {
      await this.http.patch(`/images/${imageId}`, [{ op: 'replace', path: '/protected', value }], {
        headers: { ...this.headers(context), 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
      });
      return true;
    } catch (error) {
      if (isAxiosError(error) && error.response?.status === 404) return false;
      throw glanceFailure(`update of image ${imageId}`, error);
    }
  }

  /**
   * Deletes a protected image (a shelve snapshot); true when it was there, false when it was gone.
   * An upload that was just aborted ends on Glance's side a moment later by saving the whole image
   * as it read it, protected again: a delete refused as protected is tried again, unprotected anew.
   */
  async unprotectAndDelete(context: RequestContext, imageId: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      if (!(await this.setProtected(context, imageId, false))) return false;
      try {
        return await this.deleteImage(context, imageId);
      } catch (error) {
        if (attempt >= PROTECTED_DELETE_ATTEMPTS || !refusedAsProtected(error)) throw error;
        await sleep(500 * attempt);
      }
    }
  }

  /** The first `length` bytes of the image's data (fewer when the image is smaller). */
  async readImageHead(context: RequestContext, imageId: string, length: number): Promise<Buffer> {
    try {
      const response = await this.http.get<Readable>(`/images/${imageId}/file`, {
        headers: { ...this.headers(context), Range: `bytes=0-${length - 1}` },
        responseType: 'stream',
      });
      // Read no further than asked, whether Glance honoured the range or sent the whole image.
      const chunks: Buffer[] = [];
      let read = 0;
      for await (const chunk of response.data as AsyncIterable<Buffer>) {
        chunks.push(chunk);
        read += chunk.length;
        if (read >= length) break;
      }
      response.data.destroy();
      return Buffer.concat(chunks).subarray(0, length);
    } catch (error) {
      throw glanceFailure(`read of image ${imageId}`, error);
    }
  }
}
