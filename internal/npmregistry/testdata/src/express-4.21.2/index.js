'use strict';
// A stand-in for express in lxcfleet's test registry (the benchmark's
// smoke test runs without the internet): app.get(path, handler),
// res.status(code), res.json(value), app.listen(...) over node:http.
const http = require('http');

module.exports = function express() {
  const routes = new Map();
  const app = (req, res) => {
    res.status = (code) => {
      res.statusCode = code;
      return res;
    };
    res.json = (value) => {
      const body = JSON.stringify(value);
      res.setHeader('Content-Type', 'application/json; charset=utf-8');
      res.setHeader('Content-Length', Buffer.byteLength(body));
      res.end(body);
      return res;
    };
    const handler = req.method === 'GET' || req.method === 'HEAD' ? routes.get(req.url.split('?')[0]) : undefined;
    if (!handler) {
      res.statusCode = 404;
      res.end('Not Found');
      return;
    }
    handler(req, res);
  };
  app.get = (path, handler) => {
    routes.set(path, handler);
    return app;
  };
  app.listen = (...args) => http.createServer(app).listen(...args);
  return app;
};
