// The anchor of bench/coldstart.py: load what firestore-send-email's compiled lib/index.js loads before
// the function can be served, in the order its imports run (index, then logs, config, templates, helpers,
// events, nodemailer-sendgrid, prepare-payload, validation; type-only imports are dropped by tsc), then
// register the trigger as its module does, and print "ready". The extension's own code (about 1,500
// lines of JavaScript once compiled) is not here: its dependencies, at the versions its lock pins
// (package.json), are what the load costs.
"use strict";
const { initializeApp } = require("firebase-admin/app");
const { FieldValue, Timestamp, getFirestore } = require("firebase-admin/firestore");
const { onDocumentWritten } = require("firebase-functions/v2/firestore");
const functions = require("firebase-functions");
const nodemailer = require("nodemailer");
const admin = require("firebase-admin"); // logs, templates
const { create } = require("handlebars"); // templates
const { URL } = require("url"); // helpers
const { logger } = require("firebase-functions/v1"); // helpers, validation
const { getEventarc } = require("firebase-admin/eventarc"); // events
const sgMail = require("@sendgrid/mail"); // nodemailer-sendgrid
const { z } = require("zod"); // prepare-payload, validation

// index.ts's module-level work: the trigger's registration (initializeApp runs on the first event).
exports.processQueue = onDocumentWritten({ document: "mail/{id}", region: "us-central1" }, async () => {});
void [initializeApp, FieldValue, Timestamp, getFirestore, functions, nodemailer, admin, create, URL, logger,
  getEventarc, sgMail, z];

// --with-grpc: also what the first Firestore request loads. @google-cloud/firestore defers its gRPC
// client (google-gax, @grpc/grpc-js, the v1 GAPIC client) until then, so the first event pays for it;
// the Python client loads its gRPC stack at import. Required here as the client pool's factory does.
if (process.argv.includes("--with-grpc")) {
  require("google-gax");
  require("@google-cloud/firestore/build/src/v1");
}
process.stdout.write("ready\n");
