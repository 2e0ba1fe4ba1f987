import type * as grpc from "@grpc/grpc-js";
import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";

/**
 * Adds gRPC server reflection (v1 and v1alpha) for the given files and everything they import, so
 * grpcurl and other tools work with no .proto files at hand (docs/CONTRACT.md A1).
 */
export function addReflection(server: Pick<grpc.Server, "addService">, files: readonly DescFile[]): void {
  const seen = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (seen.has(file.proto.name)) return;
    seen.set(file.proto.name, file);
    for (const dep of file.dependencies) visit(dep);
  };
  for (const file of files) visit(file);
  const fileDescriptorProtos = [...seen.values()].map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
  // @grpc/reflection reads only `fileDescriptorProtos` from each entry of the package definition.
  const definition = { tidemark: { fileDescriptorProtos } } as unknown as ConstructorParameters<typeof ReflectionService>[0];
  new ReflectionService(definition).addToServer(server);
}
