// The local stack's Keystone, as the tests use it: its API, and tokens by password.
function fromEnvironment(name: 'KEYSTONE_URL' | 'KEYSTONE_ADMIN_PASSWORD'): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set: source .stack/env after scripts/stack up`);
  return value;
}

export const keystoneUrl = fromEnvironment('KEYSTONE_URL');
/** The password of the admin that keystone-manage bootstrap made, in its project "admin". */
export const adminPassword = fromEnvironment('KEYSTONE_ADMIN_PASSWORD');

/** Calls Keystone's API; anything but a 2xx fails the test, with Keystone's answer. */
export async function keystone<T = unknown>(
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<{ body: T; headers: Headers }> {
  const response = await fetch(`${keystoneUrl}${path}`, {
    method,
    headers: {
      ...(token ? { 'x-auth-token': token } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`Keystone ${method} ${path}: ${response.status} ${text}`);
  return { body: (text ? JSON.parse(text) : undefined) as T, headers: response.headers };
}

/** A token by password authentication, scoped to the project if one is given, else unscoped. */
export async function issueToken(userName: string, password: string, project?: { id: string } | { name: string }) {
  const response = await keystone('POST', '/auth/tokens', undefined, {
    auth: {
      identity: { methods: ['password'], password: { user: { name: userName, domain: { id: 'default' }, password } } },
      ...(project
        ? { scope: { project: 'name' in project ? { ...project, domain: { id: 'default' } } : project } }
        : {}),
    },
  });
  return response.headers.get('x-subject-token')!;
}
