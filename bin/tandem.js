#!/usr/bin/env node
// The CLI runs the TypeScript sources through tsx: no separate build step for the JS side.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
