// The flavors servers are created with: Nova's classic m1 sizes, plus m1.nano for tiny test VMs.
import type { Flavor } from './nova.js';

export const FLAVORS: readonly Flavor[] = [
  { flavorid: '0', name: 'm1.nano', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
  { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 512, rootGb: 1, ephemeralGb: 0, swap: 0 },
  { flavorid: '2', name: 'm1.small', vcpus: 1, memoryMb: 2048, rootGb: 20, ephemeralGb: 0, swap: 0 },
  { flavorid: '3', name: 'm1.medium', vcpus: 2, memoryMb: 4096, rootGb: 40, ephemeralGb: 0, swap: 0 },
  { flavorid: '4', name: 'm1.large', vcpus: 4, memoryMb: 8192, rootGb: 80, ephemeralGb: 0, swap: 0 },
];

export function findFlavor(idOrName: string): Flavor | undefined {
  return FLAVORS.find((flavor) => flavor.flavorid === idOrName || flavor.name === idOrName);
}
