set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row6.png.tmp.20991'
$m << EOD
0.131549 0.140097 0.107284 0.13233 0.132054 0.122817 0.133318 0.100551
0.101976 0.115556 0.138419 0.132629 0.123897 0.095864 0.168336 0.123323
EOD
set title "USMoE, k=2: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
