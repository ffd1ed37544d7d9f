set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row6.png.tmp.15986'
$m << EOD
0.0844439 0.144761 0.0865809 0.138419 0.163787 0.155308 0.130078 0.0966222
0.120473 0.118107 0.120933 0.130997 0.109375 0.177482 0.115579 0.107054
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
