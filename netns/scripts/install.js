#!/usr/bin/env node
// `npm ci` runs this: builds the addon with node-gyp, against this node's own headers when they are installed
// (<prefix>/include/node, as the nodejs package ships them), so that nothing is downloaded.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const prefix = path.resolve(path.dirname(process.execPath), '..');
const args = ['rebuild'];
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')))
  args.push(`--nodedir=${prefix}`);
const gyp = process.env.npm_config_node_gyp;
if (gyp) execFileSync(process.execPath, [gyp, ...args], { stdio: 'inherit', cwd: path.join(__dirname, '..') });
else execFileSync('node-gyp', args, { stdio: 'inherit', cwd: path.join(__dirname, '..') });
