/**
 * The peers the ttrpc benchmark calls, each in its own process like the Go shim: `ttrpc <socket>` serves
 * containerd.task.v2.Task/State with our server and answers NOT_FOUND (as the runc shim does for an unknown id);
 * `echo <socket>` writes back every byte it reads (the floor). Prints "ready" once listening.
 */
import fs from 'node:fs';
import net from 'node:net';
import { Code, Server, StatusError } from 'ttrpc-ts';
import { TaskService } from '../protos/containerd';

const [mode, socket] = process.argv.slice(2);
if (!socket) throw new Error('usage: ttrpc-peer ttrpc|echo SOCKET');
fs.rmSync(socket, { force: true });

if (mode === 'ttrpc') {
  const server = new Server().register(TaskService, {
    // The same reply the runc shim gives for an unknown id, so both servers send identical bytes.
    State: () => {
      throw new StatusError(Code.NOT_FOUND, 'container not created: not found');
    },
  });
  void server.listen(socket).then(() => console.log('ready'));
} else {
  net.createServer((s) => s.pipe(s)).listen(socket, () => console.log('ready'));
}
