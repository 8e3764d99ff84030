// Runs inside a hypervisor (scripts/hypervisor exec NAME): offers one guest's protocol port at the
// hypervisor's own address, since the guests' networks are reachable from their hypervisor only.
// Each connection is joined to the guest once it answers. Usage: guest-relay.ts LISTEN_IP GUEST_IP
import net from 'node:net';
import { connectWithRetry, guestProtocolPort } from '../../lib/guest-protocol.js';

const [listenIp, guestIp] = process.argv.slice(2);

net
  .createServer((client) => {
    client.on('error', () => undefined);
    connectWithRetry({ host: guestIp!, port: guestProtocolPort }, 120_000).then(
      (guest) => {
        guest.on('error', () => undefined);
        guest.on('close', () => client.destroy());
        client.on('close', () => guest.destroy());
        client.pipe(guest).pipe(client);
      },
      () => client.destroy(),
    );
  })
  .listen(guestProtocolPort, listenIp, () => console.log(`relaying ${listenIp} to ${guestIp}`));
