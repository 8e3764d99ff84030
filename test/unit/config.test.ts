import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';

describe('loadConfig', () => {
  it('defaults to the local stack and Nova defaults', () => {
    const config = loadConfig({ LIBVIRT_VIRT_TYPE: 'qemu' });
    expect(config.temporal).toEqual({
      address: '127.0.0.1:7233',
      namespace: 'default',
      conductorTaskQueue: 'shelve',
      tls: false,
      apiKey: undefined,
    });
    expect(config.glance.url).toBe('http://127.0.0.1:9292');
    expect(config.compute.libvirtUri).toBe('qemu:///system');
    expect(config.shutdownTimeout).toBe(60);
    expect(config.shelvedOffloadTime).toBe(0);
  });

  it('reads each part from the environment', () => {
    const config = loadConfig({
      TEMPORAL_ADDRESS: 'temporal.example:7233',
      DATABASE_URL: 'postgres://db/x',
      GLANCE_URL: 'https://glance.example/',
      LIBVIRT_URI: 'qemu+ssh://h/system',
      LIBVIRT_VIRT_TYPE: 'kvm',
      COMPUTE_HOST: 'h1',
      SHELVED_OFFLOAD_TIME: '-1',
    });
    expect(config.temporal.address).toBe('temporal.example:7233');
    expect(config.databaseUrl).toBe('postgres://db/x');
    expect(config.glance.url).toBe('https://glance.example');
    expect(config.compute).toMatchObject({ host: 'h1', libvirtUri: 'qemu+ssh://h/system', virtType: 'kvm' });
    expect(config.shelvedOffloadTime).toBe(-1);
  });

  it('names the variable and the value it cannot use', () => {
    expect(() => loadConfig({ SHUTDOWN_TIMEOUT: 'soon' })).toThrow(
      "SHUTDOWN_TIMEOUT must be an integer >= 0, got 'soon'",
    );
    expect(() => loadConfig({ SHELVED_OFFLOAD_TIME: '-2' })).toThrow('SHELVED_OFFLOAD_TIME must be an integer >= -1');
    expect(() => loadConfig({ LIBVIRT_VIRT_TYPE: 'xen' })).toThrow("LIBVIRT_VIRT_TYPE must be kvm or qemu, got 'xen'");
  });

  it('authenticates with noauth2 unless told keystone, which needs its v3 endpoint', () => {
    expect(loadConfig({ KEYSTONE_URL: 'http://127.0.0.1:5000/v3' }).auth).toEqual({ strategy: 'noauth2' });
    expect(
      loadConfig({ AUTH_STRATEGY: 'keystone', KEYSTONE_URL: 'https://keystone.example/identity/v3/' }).auth,
    ).toEqual({ strategy: 'keystone', keystoneUrl: 'https://keystone.example/identity/v3' });
    expect(() => loadConfig({ AUTH_STRATEGY: 'noauth' })).toThrow(
      "AUTH_STRATEGY must be noauth2 or keystone, got 'noauth'",
    );
    expect(() => loadConfig({ AUTH_STRATEGY: 'keystone' })).toThrow('AUTH_STRATEGY=keystone needs KEYSTONE_URL');
    for (const url of ['http://127.0.0.1:5000', 'keystone:5000/v3', 'ftp://keystone/v3']) {
      expect(() => loadConfig({ AUTH_STRATEGY: 'keystone', KEYSTONE_URL: url })).toThrow(
        `KEYSTONE_URL must be Keystone's v3 endpoint, e.g. http://127.0.0.1:5000/v3, got '${url}'`,
      );
    }
  });

  it('reaches Glance without auth unless told keystone, which needs service credentials', () => {
    expect(loadConfig({ LIBVIRT_VIRT_TYPE: 'qemu' }).glance.auth).toEqual({ kind: 'none' });
    const keystone = { LIBVIRT_VIRT_TYPE: 'qemu', GLANCE_AUTH: 'keystone', KEYSTONE_URL: 'http://ks.example/v3/' };
    const secret = 'do-not-print-me';
    expect(
      loadConfig({
        ...keystone,
        GLANCE_SERVICE_USERNAME: 'glance-svc',
        GLANCE_SERVICE_PASSWORD: secret,
        GLANCE_SERVICE_PROJECT: 'service',
      }).glance.auth,
    ).toEqual({
      kind: 'keystone',
      keystoneUrl: 'http://ks.example/v3',
      credentials: {
        kind: 'password',
        userName: 'glance-svc',
        password: secret,
        projectName: 'service',
        userDomain: 'Default',
        projectDomain: 'Default',
      },
    });
    expect(
      loadConfig({
        ...keystone,
        GLANCE_APPLICATION_CREDENTIAL_ID: 'ac1',
        GLANCE_APPLICATION_CREDENTIAL_SECRET: secret,
      }).glance.auth,
    ).toMatchObject({ credentials: { kind: 'applicationCredential', id: 'ac1', secret } });

    const refusals: [NodeJS.ProcessEnv, string][] = [
      [{ GLANCE_AUTH: 'token' }, "GLANCE_AUTH must be none or keystone, got 'token'"],
      [{ GLANCE_AUTH_TOKEN: secret }, 'GLANCE_AUTH_TOKEN is no longer read'],
      [{ GLANCE_AUTH: 'keystone' }, 'GLANCE_AUTH=keystone needs KEYSTONE_URL'],
      [{ ...keystone, KEYSTONE_URL: 'http://ks.example:5000' }, "KEYSTONE_URL must be Keystone's v3 endpoint"],
      [
        { ...keystone, GLANCE_SERVICE_USERNAME: 'glance-svc', GLANCE_SERVICE_PROJECT: 'service' },
        'GLANCE_AUTH=keystone needs GLANCE_SERVICE_USERNAME, GLANCE_SERVICE_PASSWORD, GLANCE_SERVICE_PROJECT (or GLANCE_APPLICATION_CREDENTIAL_ID and GLANCE_APPLICATION_CREDENTIAL_SECRET); missing: GLANCE_SERVICE_PASSWORD',
      ],
      [
        { ...keystone, GLANCE_APPLICATION_CREDENTIAL_SECRET: secret },
        'GLANCE_AUTH=keystone needs GLANCE_APPLICATION_CREDENTIAL_ID too',
      ],
      [
        { ...keystone, GLANCE_APPLICATION_CREDENTIAL_ID: 'ac1', GLANCE_SERVICE_PASSWORD: secret },
        'GLANCE_AUTH=keystone takes an application credential or a password, not both: unset GLANCE_SERVICE_PASSWORD',
      ],
    ];
    for (const [env, message] of refusals) {
      let error: unknown;
      try {
        loadConfig({ LIBVIRT_VIRT_TYPE: 'qemu', ...env });
      } catch (caught) {
        error = caught;
      }
      expect(error, message).toBeInstanceOf(Error);
      expect((error as Error).message).toContain(message);
      expect((error as Error).message).not.toContain(secret);
    }
  });
});
