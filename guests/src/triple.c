/* triple: makes the CPU shut down. With an empty IDT, #UD cannot be delivered (#GP), nor can
 * that #GP (#DF), nor the #DF: a triple fault. The hypervisor must shut this VM down alone. */
#include "rt.h"

int main(void) {
    serial_init();
    printf("loading an empty IDT and executing UD2\n");
    struct { uint16_t limit; ureg base; } __attribute__((packed)) idtr = {0, 0};
    __asm__ volatile("lidt %0; ud2" ::"m"(idtr));
    printf("still alive?\n");
    return 1;
}
